//! Messages kept in memory only: a queue of a broker without a data directory. Nothing is
//! written, so nothing is ever read back or settled.

use std::io;

use super::{MessageStore, Position, Stored};
use crate::broker::message::Message;

/// Keeps nothing: the queue's own ready list holds every message.
#[derive(Debug, Default, Clone, Copy)]
pub struct Memory;

impl MessageStore for Memory {
    fn put(&mut self, _: &Message, _: bool, _: u64, _: usize) -> io::Result<Stored> {
        Ok(Stored::IN_MEMORY)
    }

    fn delivered(&mut self, _: Position, _: &Message, _: u64, _: bool, _: bool) {}

    fn settle(&mut self, _: Position, _: Option<(&Message, u64)>) {}

    fn buffers(&self) -> bool {
        false
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn destroy(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}
