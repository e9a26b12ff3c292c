//! The common name (CN) of an X.509 certificate's subject: the user name SASL EXTERNAL logs in
//! with (RabbitMQ's `ssl_cert_login_from = common_name`). A bounded DER walk of the few fields
//! before the subject; every length is checked against what is left, nothing is allocated from
//! a wire length. The certificate was verified by rustls before it gets here.

/// DER tags used on the way to the subject.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `[0] EXPLICIT Version` in a TBSCertificate.
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// The subject's common name; several are joined with "," (as RabbitMQ does). `None` when the
/// certificate cannot be read or has no common name.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer, validity; then the subject.
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (mut names, _) = expect(rest, SEQUENCE)?;
    let mut found: Vec<String> = Vec::new();
    while !names.is_empty() {
        let (mut set, after) = expect(names, SET)?;
        names = after;
        while !set.is_empty() {
            let (attribute, after) = expect(set, SEQUENCE)?;
            set = after;
            let (oid, value) = expect(attribute, OID)?;
            if oid == COMMON_NAME {
                let (tag, content, _) = element(value)?;
                found.push(text(tag, content)?);
            }
        }
    }
    match found.is_empty() {
        true => None,
        false => Some(found.join(",")),
    }
}

/// The content of an element with `tag` at the start of `input`, and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match element(input)? {
        (found, content, rest) if found == tag => Some((content, rest)),
        _ => None,
    }
}

/// One DER element: (tag, content, rest). Low tag numbers and definite lengths only (all DER
/// certificates use).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let length = match first {
        n if n < 0x80 => usize::from(n),
        n => {
            let bytes = usize::from(n & 0x7f);
            if bytes == 0 || bytes > 4 {
                return None;
            }
            let (be, after) = (input.get(..bytes)?, input.get(bytes..)?);
            input = after;
            be.iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        }
    };
    let content = input.get(..length)?;
    Some((tag, content, input.get(length..)?))
}

/// A directory string's text.
fn text(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String
        0x0c | 0x13 | 0x16 => std::str::from_utf8(content).ok().map(str::to_owned),
        // TeletexString: Latin-1 in practice.
        0x14 => Some(content.iter().map(|b| char::from(*b)).collect()),
        // BMPString: UTF-16BE.
        0x1e if content.len().is_multiple_of(2) => {
            let units = content
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn certificate(names: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        let mut dn = DistinguishedName::new();
        for (kind, value) in names {
            dn.push(kind.clone(), *value);
        }
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_subjects_common_name() {
        let der = certificate(&[
            (DnType::OrganizationName, "Warren"),
            (DnType::CommonName, "app-user"),
        ]);
        assert_eq!(common_name(&der).as_deref(), Some("app-user"));
        let der = certificate(&[(DnType::CommonName, "ünïcode")]);
        assert_eq!(common_name(&der).as_deref(), Some("ünïcode"));
    }

    #[test]
    fn no_common_name_or_garbage() {
        let der = certificate(&[(DnType::OrganizationName, "Warren")]);
        assert_eq!(common_name(&der), None);
        assert_eq!(common_name(b""), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        let der = certificate(&[(DnType::CommonName, "x")]);
        for cut in 0..der.len() {
            let _ = common_name(&der[..cut]);
        }
    }
}
