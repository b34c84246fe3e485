//! Airflow 2 webserver sessions, checked the way Flask and itsdangerous check them, so a user
//! logged in to Airflow is logged in to backfilld served on the same site (single sign-on).
//!
//! The `session` cookie is one of two things, after `[webserver] session_backend`:
//! - `securecookie`: Flask's signed cookie, `[.]payload.timestamp.signature` (a leading `.`
//!   marks a zlib-compressed payload; base64url without padding; HMAC-SHA1 over
//!   `payload.timestamp` with the key HMAC-SHA1(secret_key, "cookie-session")), expiring after
//!   `PERMANENT_SESSION_LIFETIME`;
//! - `database` (the default): Flask-Session's signed session id `sid.signature` (key
//!   HMAC-SHA1(secret_key, "flask-session")), whose data is the `session` table's row.
//!
//! Either way the data is Flask's tagged JSON, and Flask-Login keeps the user's `ab_user.id`
//! under `_user_id`. Everything here is pure (time is passed in).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::io::Read as _;

/// Flask's salt for its signed session cookie.
const COOKIE_SALT: &[u8] = b"cookie-session";
/// Flask-Session's salt for signed session ids.
const SID_SALT: &[u8] = b"flask-session";
/// The most a compressed session payload may inflate to.
const MAX_PAYLOAD: u64 = 64 * 1024;

/// Why a session cookie is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not in the signed format.
    #[error("the session cookie is malformed")]
    Malformed,
    /// The signature does not match the secret key.
    #[error("the session cookie's signature does not match")]
    BadSignature,
    /// Older than the session lifetime (or from the future).
    #[error("the session has expired")]
    Expired,
    /// No user is logged in in this session.
    #[error("no user is logged in in this session")]
    NoUser,
}

type HmacSha1 = Hmac<Sha1>;

fn b64(text: &str) -> Result<Vec<u8>, SessionError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| SessionError::Malformed)
}

/// itsdangerous' `key_derivation="hmac"`: HMAC(secret_key, salt).
fn derive_key(secret: &[u8], salt: &[u8]) -> Result<Vec<u8>, SessionError> {
    let mut mac = HmacSha1::new_from_slice(secret).map_err(|_| SessionError::Malformed)?;
    mac.update(salt);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Check `signature` (base64url) over `value` with the key of `secret` and `salt`
/// (constant-time).
fn verify(secret: &[u8], salt: &[u8], value: &str, signature: &str) -> Result<(), SessionError> {
    let sig = b64(signature)?;
    let mut mac = HmacSha1::new_from_slice(&derive_key(secret, salt)?)
        .map_err(|_| SessionError::Malformed)?;
    mac.update(value.as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| SessionError::BadSignature)
}

/// The data of Flask's signed session cookie (`securecookie` backend), checked against
/// `secret` and the lifetime (`max_age_secs`) at `now_unix`.
pub fn open_cookie(
    cookie: &str,
    secret: &[u8],
    max_age_secs: u64,
    now_unix: i64,
) -> Result<serde_json::Value, SessionError> {
    let (signed, signature) = cookie.rsplit_once('.').ok_or(SessionError::Malformed)?;
    verify(secret, COOKIE_SALT, signed, signature)?;
    let (payload, stamp) = signed.rsplit_once('.').ok_or(SessionError::Malformed)?;
    let stamp = b64(stamp)?;
    if stamp.is_empty() || stamp.len() > 8 {
        return Err(SessionError::Malformed);
    }
    let signed_at = stamp.iter().fold(0i64, |acc, b| (acc << 8) | i64::from(*b));
    let age = now_unix - signed_at;
    if age < 0 || u64::try_from(age).is_ok_and(|a| a > max_age_secs) {
        return Err(SessionError::Expired);
    }
    let json = match payload.strip_prefix('.') {
        Some(compressed) => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(b64(compressed)?.as_slice())
                .take(MAX_PAYLOAD)
                .read_to_end(&mut out)
                .map_err(|_| SessionError::Malformed)?;
            out
        }
        None => b64(payload)?,
    };
    serde_json::from_slice(&json).map_err(|_| SessionError::Malformed)
}

/// The session id of Flask-Session's signed cookie (`database` backend), checked against
/// `secret`.
pub fn open_sid(cookie: &str, secret: &[u8]) -> Result<String, SessionError> {
    let (sid, signature) = cookie.rsplit_once('.').ok_or(SessionError::Malformed)?;
    verify(secret, SID_SALT, sid, signature)?;
    if sid.is_empty() || sid.len() > 255 {
        return Err(SessionError::Malformed);
    }
    Ok(sid.to_owned())
}

/// Flask-Login's `_user_id` of session data (a string of `ab_user.id`).
pub fn user_id(data: &serde_json::Value) -> Result<i64, SessionError> {
    match data.get("_user_id") {
        Some(serde_json::Value::String(s)) => s.parse().map_err(|_| SessionError::NoUser),
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or(SessionError::NoUser),
        _ => Err(SessionError::NoUser),
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made in Airflow 2.11's venv (Flask 2.3, itsdangerous 2.2) with secret key "s3cret":
    // app.session_interface.get_signing_serializer(app).dumps(...) at t=1764900000, and
    // flask-session's Signer(..., salt="flask-session", key_derivation="hmac").sign("abc123").
    const PLAIN: &str =
        "eyJfdXNlcl9pZCI6IjUiLCJfZnJlc2giOnRydWV9.aTI8oA.Or_Y7tmNx7n7RucevCyzBIf55T8";
    const COMPRESSED: &str = ".eJyrVoovLU4tis9MUbJSMlfSUYpPK0otzlCyKikqTdVRSi4uSosvyc9OzQNKJw4TAPRlTn5yYk4q0E-pecMDKtUCAMTwsMs.aTI8oA.N8Dcj9ntCNh2W__NI1fnQ7bYsQY";
    const SID: &str = "abc123.R5T2Uf216sdNzc0s4vwMHnMpYrw";
    const SIGNED_AT: i64 = 1_764_900_000;

    #[test]
    fn flask_cookie_round_trip() {
        let data =
            open_cookie(PLAIN, b"s3cret", 3600, SIGNED_AT + 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user_id(&data), Ok(5));
        assert_eq!(
            open_cookie(PLAIN, b"other", 3600, SIGNED_AT + 10),
            Err(SessionError::BadSignature)
        );
        assert_eq!(
            open_cookie(PLAIN, b"s3cret", 3600, SIGNED_AT + 3601),
            Err(SessionError::Expired)
        );
        assert_eq!(
            open_cookie(PLAIN, b"s3cret", 3600, SIGNED_AT - 5),
            Err(SessionError::Expired)
        );
        let tampered = PLAIN.replacen("eyJfdXNlcl9pZCI6IjUi", "eyJfdXNlcl9pZCI6IjEi", 1);
        assert_eq!(
            open_cookie(&tampered, b"s3cret", 3600, SIGNED_AT + 10),
            Err(SessionError::BadSignature)
        );
        assert_eq!(
            open_cookie("garbage", b"s3cret", 3600, SIGNED_AT),
            Err(SessionError::Malformed)
        );
    }

    #[test]
    fn compressed_cookie_and_signed_sid() {
        let data =
            open_cookie(COMPRESSED, b"s3cret", 3600, SIGNED_AT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user_id(&data), Ok(7));
        assert_eq!(open_sid(SID, b"s3cret"), Ok("abc123".to_owned()));
        assert_eq!(open_sid(SID, b"other"), Err(SessionError::BadSignature));
        assert_eq!(
            open_sid("abc124.R5T2Uf216sdNzc0s4vwMHnMpYrw", b"s3cret"),
            Err(SessionError::BadSignature)
        );
    }

    #[test]
    fn user_ids() {
        assert_eq!(user_id(&serde_json::json!({"_user_id": "12"})), Ok(12));
        assert_eq!(
            user_id(&serde_json::json!({"_fresh": false})),
            Err(SessionError::NoUser)
        );
        assert_eq!(
            cookie_value("a=1; session=x.y; b=2", "session"),
            Some("x.y")
        );
        assert_eq!(cookie_value("a=1", "session"), None);
    }
}
