//! Opaque page tokens for keyset pagination.
//!
//! A token carries the sort key of the last row of a page, authenticated with an HMAC over
//! that key and a fingerprint of the query (its filter and order). A token used with another
//! query, or altered in any byte, fails the check and is refused as `INVALID_ARGUMENT`
//! instead of silently returning a wrong page.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

/// Default page size when a request asks for 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page size served; larger requests are capped.
pub const MAX_PAGE_SIZE: usize = 1_000;

const TAG_LEN: usize = 16;

/// Why a page token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    /// Not a token this server issued, or altered.
    #[error("is not a valid page token (it was altered or truncated)")]
    Malformed,
    /// Issued for another filter or order.
    #[error("was issued for another query: send the same filter and order as the first page")]
    OtherQuery,
}

/// Issues and checks page tokens with a server key.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens")
    }
}

impl PageTokens {
    /// Derives the token key from a server secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"aegis page token v1\0");
        hasher.update(secret);
        Self {
            key: hasher.finalize().into(),
        }
    }

    fn tag(&self, fingerprint: &str, cursor: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(fingerprint.as_bytes());
        mac.update(&[0]);
        mac.update(cursor);
        mac.finalize().into_bytes().into()
    }

    /// A token for the page after `cursor`, valid only for the query with `fingerprint`.
    pub fn encode(&self, fingerprint: &str, cursor: &impl Serialize) -> String {
        let cursor = serde_json::to_vec(cursor).unwrap_or_default();
        let tag = self.tag(fingerprint, &cursor);
        let mut bytes = cursor;
        bytes.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor of a token, after checking it belongs to the query with `fingerprint`.
    pub fn decode<T: DeserializeOwned>(
        &self,
        fingerprint: &str,
        token: &str,
    ) -> Result<T, PageTokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| PageTokenError::Malformed)?;
        if bytes.len() <= TAG_LEN {
            return Err(PageTokenError::Malformed);
        }
        let (cursor, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let expected = self.tag(fingerprint, cursor);
        if !constant_time_eq(&expected[..TAG_LEN], tag) {
            // Distinguish "another query" from "altered" only when the cursor parses and
            // would be valid for some query; the tag alone cannot tell them apart.
            return Err(if serde_json::from_slice::<T>(cursor).is_ok() {
                PageTokenError::OtherQuery
            } else {
                PageTokenError::Malformed
            });
        }
        serde_json::from_slice(cursor).map_err(|_| PageTokenError::Malformed)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The fingerprint of a query: SHA-256 of its serialized form.
pub fn fingerprint(query: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(query).unwrap_or_default();
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The page size a request asked for: 0 means the default; larger than the maximum is capped.
/// A negative size is an error the caller reports on its `page_size` field.
pub fn page_size(requested: i32, default: usize) -> Result<usize, String> {
    match requested {
        n if n < 0 => Err(format!(
            "must be 0 (the default of {default}) or more; got {n}"
        )),
        0 => Ok(default),
        n => Ok(usize::try_from(n)
            .unwrap_or(MAX_PAGE_SIZE)
            .min(MAX_PAGE_SIZE)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_token_round_trips_for_its_query() {
        let tokens = PageTokens::new(b"secret");
        let token = tokens.encode("q1", &(42_i64, "abc"));
        assert_eq!(
            tokens.decode::<(i64, String)>("q1", &token),
            Ok((42, "abc".to_owned()))
        );
    }

    #[test]
    fn a_token_from_another_query_is_refused() {
        let tokens = PageTokens::new(b"secret");
        let token = tokens.encode("q1", &(42_i64, "abc"));
        assert_eq!(
            tokens.decode::<(i64, String)>("q2", &token),
            Err(PageTokenError::OtherQuery)
        );
    }

    #[test]
    fn a_token_of_another_server_key_is_refused() {
        let token = PageTokens::new(b"one").encode("q", &1_i64);
        assert!(PageTokens::new(b"two").decode::<i64>("q", &token).is_err());
    }

    proptest! {
        #[test]
        fn any_changed_byte_is_refused(index in 0usize..64, bit in 0u8..8) {
            let tokens = PageTokens::new(b"secret");
            let token = tokens.encode("q", &(1_700_000_000_i64, 17_i64));
            let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("decodes");
            let index = index % bytes.len();
            bytes[index] ^= 1 << bit;
            let altered = URL_SAFE_NO_PAD.encode(bytes);
            prop_assert!(tokens.decode::<(i64, i64)>("q", &altered).is_err());
        }

        #[test]
        fn garbage_never_panics(text in ".{0,80}") {
            let tokens = PageTokens::new(b"secret");
            let _ = tokens.decode::<(i64, i64)>("q", &text);
        }
    }

    #[test]
    fn page_size_defaults_caps_and_refuses_negatives() {
        assert_eq!(page_size(0, 50), Ok(50));
        assert_eq!(page_size(10, 50), Ok(10));
        assert_eq!(page_size(5_000, 50), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1, 50).is_err());
    }
}
