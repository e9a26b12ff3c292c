//! What goes wrong with a configuration file, and where: a [`Problem`] names the file, line and
//! column and says what is wrong; a [`Report`] holds every problem found in one pass, in file
//! order. Byte offsets (the TOML parser's spans) become line and column here and nowhere else.

use std::fmt;
use std::ops::Range;

use thiserror::Error;

/// A place in a configuration file (line and column count from 1; the column in characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One thing wrong with a file: where (when it is about a place in it) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// Line and column; `None` for a problem with the file as a whole (it cannot be read).
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl Problem {
    pub fn at(location: &Location, message: impl Into<String>) -> Problem {
        Problem {
            file: location.file.clone(),
            position: Some((location.line, location.column)),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => {
                write!(f, "{}:{line}:{column}: {}", self.file, self.message)
            }
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found in a file, in the order of the file.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub struct Report {
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn new(mut problems: Vec<Problem>) -> Report {
        problems.sort_by_key(|p| p.position);
        problems.dedup();
        Report { problems }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// A file's text with its name, turning byte offsets into locations.
pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
    /// The byte offset at which each line starts.
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub fn new(name: &'a str, text: &'a str) -> Source<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            name,
            text,
            line_starts,
        }
    }

    /// The location of a byte offset (clamped to the text).
    pub fn locate(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|start| *start <= offset);
        let start = self.line_starts[line.saturating_sub(1)];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Location {
            file: self.name.to_owned(),
            line,
            column,
        }
    }

    /// A problem at the start of a span.
    pub fn problem(&self, span: &Range<usize>, message: impl Into<String>) -> Problem {
        Problem::at(&self.locate(span.start), message)
    }

    /// A problem with the file as a whole.
    pub fn whole(&self, message: impl Into<String>) -> Problem {
        Problem {
            file: self.name.to_owned(),
            position: None,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let source = Source::new("f.toml", "a = 1\nbé = 2\n\nc");
        let at = |offset| {
            let l = source.locate(offset);
            (l.line, l.column)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(4), (1, 5));
        assert_eq!(at(6), (2, 1));
        // 'é' is two bytes and one column.
        assert_eq!(at(9), (2, 3));
        assert_eq!(at(14), (3, 1));
        assert_eq!(at(15), (4, 1));
        assert_eq!(at(99), (4, 2));
        assert_eq!(source.locate(6).to_string(), "f.toml:2:1");
    }
}
