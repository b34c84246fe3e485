//! Authentication of HTTP callers as Airflow users: werkzeug password hashes (what
//! Flask-AppBuilder stores in `ab_user.password`), Airflow 3 api-server tokens, failed-login
//! rate limits, web UI sessions and their CSRF tokens. Everything here is pure (time is
//! passed in) except [`random_token`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hmac::Hmac;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Most pbkdf2 iterations accepted from a stored hash (werkzeug 3.1 writes 1,000,000).
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// Largest scrypt `n` accepted from a stored hash (werkzeug writes 32768).
const MAX_SCRYPT_N: u64 = 1 << 20;

/// A hash of no one's password, in werkzeug's default method, checked when a login names no
/// user so that a refusal takes as long as for a wrong password.
pub const DUMMY_HASH: &str = "scrypt:32768:8:1$TNy2krlIGQK0bHcr$108bf9b623982acbc383ecd449abe2bd865d72698f874464188a407fa38d3055666aa7187e77187f5df725d6779183612c84f3fdcbb6a15adab3e54ade5cd29e";

/// Why a stored hash cannot be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not werkzeug's `method$salt$hex`.
    #[error("the stored password hash is not in werkzeug's method$salt$hash form")]
    Malformed,
    /// A method or parameter backfilld does not verify.
    #[error("unsupported password hash method {0:?}")]
    Unsupported(String),
}

/// Check `password` against a hash written by werkzeug's `generate_password_hash`:
/// `pbkdf2:sha256:<iterations>$salt$hex`, `pbkdf2:sha512:<iterations>$...`, or
/// `scrypt:<n>:<r>:<p>$salt$hex` (also bare `scrypt`, werkzeug's defaults). The comparison is
/// constant-time.
pub fn verify_password(stored: &str, password: &str) -> Result<bool, HashError> {
    let mut parts = stored.splitn(3, '$');
    let (Some(method), Some(salt), Some(hash)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(HashError::Malformed);
    };
    let expected = hex::decode(hash).map_err(|_| HashError::Malformed)?;
    let args: Vec<&str> = method.split(':').collect();
    let unsupported = || HashError::Unsupported(method.to_owned());
    let derived = match args.as_slice() {
        ["pbkdf2", digest, iterations] => {
            let rounds: u32 = iterations.parse().map_err(|_| unsupported())?;
            if rounds == 0 || rounds > MAX_PBKDF2_ITERATIONS {
                return Err(unsupported());
            }
            match *digest {
                "sha256" => {
                    let mut out = [0u8; 32];
                    pbkdf2::pbkdf2::<Hmac<Sha256>>(
                        password.as_bytes(),
                        salt.as_bytes(),
                        rounds,
                        &mut out,
                    )
                    .map_err(|_| unsupported())?;
                    out.to_vec()
                }
                "sha512" => {
                    let mut out = [0u8; 64];
                    pbkdf2::pbkdf2::<Hmac<Sha512>>(
                        password.as_bytes(),
                        salt.as_bytes(),
                        rounds,
                        &mut out,
                    )
                    .map_err(|_| unsupported())?;
                    out.to_vec()
                }
                _ => return Err(unsupported()),
            }
        }
        ["scrypt"] => scrypt_hash(password, salt, 32768, 8, 1, expected.len())?,
        ["scrypt", n, r, p] => {
            let n: u64 = n.parse().map_err(|_| unsupported())?;
            let r: u32 = r.parse().map_err(|_| unsupported())?;
            let p: u32 = p.parse().map_err(|_| unsupported())?;
            scrypt_hash(password, salt, n, r, p, expected.len())?
        }
        _ => return Err(unsupported()),
    };
    Ok(derived.len() == expected.len() && bool::from(derived.ct_eq(&expected)))
}

fn scrypt_hash(
    password: &str,
    salt: &str,
    n: u64,
    r: u32,
    p: u32,
    len: usize,
) -> Result<Vec<u8>, HashError> {
    let bad = || HashError::Unsupported(format!("scrypt:{n}:{r}:{p}"));
    if !n.is_power_of_two()
        || !(2..=MAX_SCRYPT_N).contains(&n)
        || !(1..=32).contains(&r)
        || !(1..=16).contains(&p)
    {
        return Err(bad());
    }
    let log_n = u8::try_from(n.trailing_zeros()).map_err(|_| bad())?;
    let params = scrypt::Params::new(log_n, r, p, len).map_err(|_| bad())?;
    let mut out = vec![0u8; len];
    scrypt::scrypt(password.as_bytes(), salt.as_bytes(), &params, &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// A key of the verified-login cache: one user, one password, one stored hash (a changed
/// password in Airflow changes the hash, so it no longer matches).
pub fn login_key(username: &str, password: &str, stored: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [username, password, stored] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// Failed logins per key (a user name, or a client address) within a window; a key with
/// `max` failures in the window is refused until the window since its first failure ends.
#[derive(Debug, Default)]
pub struct RateLimiter {
    failures: HashMap<String, (Instant, u32)>,
}

impl RateLimiter {
    /// `Err(wait)` when `key` is locked out at `now`.
    pub fn check(
        &self,
        key: &str,
        now: Instant,
        max: u32,
        window: Duration,
    ) -> Result<(), Duration> {
        match self.failures.get(key) {
            Some((first, n)) if *n >= max && now < *first + window => Err(*first + window - now),
            _ => Ok(()),
        }
    }

    /// Count a failure of `key` at `now`.
    pub fn fail(&mut self, key: &str, now: Instant, window: Duration) {
        let entry = self.failures.entry(key.to_owned()).or_insert((now, 0));
        if now >= entry.0 + window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if self.failures.len() > 100_000 {
            self.failures.retain(|_, (first, _)| now < *first + window);
        }
    }

    /// Forget the failures of `key` (after a successful login).
    pub fn clear(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

/// A web UI login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The Airflow user.
    pub username: String,
    /// The token every state-changing form must carry.
    pub csrf: String,
    /// When it ends.
    pub expires: Instant,
}

/// Web UI sessions by cookie token.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
}

impl Sessions {
    /// Start a session; returns its cookie token.
    pub fn start(&mut self, username: &str, now: Instant, lasts: Duration) -> Option<String> {
        let token = random_token()?;
        let csrf = random_token()?;
        self.by_token.retain(|_, s| s.expires > now);
        self.by_token.insert(
            token.clone(),
            Session {
                username: username.to_owned(),
                csrf,
                expires: now + lasts,
            },
        );
        Some(token)
    }

    /// The live session of `token`.
    pub fn get(&self, token: &str, now: Instant) -> Option<&Session> {
        self.by_token.get(token).filter(|s| s.expires > now)
    }

    /// End a session.
    pub fn end(&mut self, token: &str) {
        self.by_token.remove(token);
    }
}

/// Whether a submitted CSRF token is the session's (constant-time).
pub fn csrf_ok(session: &Session, submitted: &str) -> bool {
    !submitted.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(submitted.as_bytes()))
}

/// 32 random bytes, hex; `None` if the OS has no randomness to give.
pub fn random_token() -> Option<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).ok()?;
    Some(hex::encode(buf))
}

/// The user name and password of an `Authorization: Basic` header value.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The claims backfilld reads from an Airflow 3 api-server token.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TokenClaims {
    /// The user: `ab_user.id` with FAB, the user name with the SimpleAuthManager.
    pub sub: String,
    /// The token's id, which Airflow 3.2+ lists in `revoked_token` once its user signs out.
    #[serde(default)]
    pub jti: Option<String>,
}

/// Validate an Airflow 3 api-server JWT with Airflow's secret (`[api_auth] jwt_secret`),
/// algorithm and audience, as Airflow does; returns its claims.
pub fn validate_token(
    token: &str,
    secret: &[u8],
    algorithm: &str,
    audience: Option<&str>,
) -> Result<TokenClaims, String> {
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
    let alg = match algorithm {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        other => return Err(format!("unsupported token algorithm {other:?}")),
    };
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "sub"]);
    match audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    decode::<TokenClaims>(token, &DecodingKey::from_secret(secret), &validation)
        .map(|d| d.claims)
        .map_err(|e| format!("invalid token: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hashes written by werkzeug's generate_password_hash (Airflow 2.11's and 3.1's venvs).
    const PBKDF2: &str = "pbkdf2:sha256:1000$saltsalt$";

    fn pbkdf2_hex(password: &str, salt: &str, rounds: u32) -> String {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2::<Hmac<Sha256>>(password.as_bytes(), salt.as_bytes(), rounds, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        hex::encode(out)
    }

    #[test]
    fn werkzeug_vectors() {
        // Written by werkzeug's generate_password_hash in Airflow 2.11's venv.
        let vectors = [
            ("pbkdf2:sha256:1000$wsQbzSHZYM5kMget$8f94d2e96422475549735d95650cbdd0b6d5a5b885c8b5676b671488e6d7644a", "admin"),
            ("scrypt:1024:8:1$rKDIGstPDL9PuCSi$6cd83616771418d6a181edaf45ebbc8b37995a4efd6d120745898f8775bd372928e4f0c024054c99c606820525c182dcc633759faa6c064577cabc92e2e39110", "pw"),
            ("pbkdf2:sha512:1000$ejUtvXnYSONqlCsr$b70cc2ca516b963a042079d0c0d561e0d61ee33a54f51bd6b13f8d1aa762ff7f8e237fc35a062048d2659ae54c92e41761d9b4db1ef76b7596e89f2576f8f02a", "pw"),
        ];
        for (stored, password) in vectors {
            assert_eq!(verify_password(stored, password), Ok(true), "{stored}");
            assert_eq!(verify_password(stored, "wrong"), Ok(false), "{stored}");
        }
    }

    #[test]
    fn empty_password_hash_matches_only_the_empty_password() {
        // generate_password_hash("") in Airflow 2.11's venv: what FAB stores for users its
        // LDAP, OAuth and REMOTE_USER sign-ins create. Only "" matches it, and the HTTP layer
        // never checks an empty password.
        let empty = "scrypt:32768:8:1$Kg2fEfpSRITpzhmz$0afc801d4102d74929a35922ffe22721b8dffe4f07a32087ce0e4f75c15a8fd0b839bb177388b42a0d6e4edabe6cbaa6d1e21dea6c06df6285e6ef4fd11e991c";
        assert_eq!(verify_password(empty, ""), Ok(true));
        assert_eq!(verify_password(empty, " "), Ok(false));
        assert_eq!(verify_password(DUMMY_HASH, ""), Ok(false));
    }

    #[test]
    fn pbkdf2_round_trip_and_refusals() {
        let stored = format!("{PBKDF2}{}", pbkdf2_hex("secret", "saltsalt", 1000));
        assert_eq!(verify_password(&stored, "secret"), Ok(true));
        assert_eq!(verify_password(&stored, "secret "), Ok(false));
        assert_eq!(verify_password("plain", "x"), Err(HashError::Malformed));
        assert_eq!(
            verify_password("pbkdf2:sha256:1000$s$zz", "x"),
            Err(HashError::Malformed)
        );
        assert!(matches!(
            verify_password("md5$s$00", "x"),
            Err(HashError::Unsupported(_))
        ));
        assert!(matches!(
            verify_password("pbkdf2:sha256:0$s$00", "x"),
            Err(HashError::Unsupported(_))
        ));
        assert!(matches!(
            verify_password("scrypt:1000:8:1$s$00", "x"),
            Err(HashError::Unsupported(_))
        ));
        // A truncated hash never matches.
        let short = format!("{PBKDF2}{}", &pbkdf2_hex("secret", "saltsalt", 1000)[..32]);
        assert_eq!(verify_password(&short, "secret"), Ok(false));
    }

    #[test]
    fn rate_limit_per_key() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        for _ in 0..3 {
            assert!(rl.check("alice", t0, 3, w).is_ok());
            rl.fail("alice", t0, w);
        }
        assert!(rl
            .check("alice", t0 + Duration::from_secs(1), 3, w)
            .is_err());
        assert!(rl.check("bob", t0, 3, w).is_ok());
        assert!(rl
            .check("alice", t0 + Duration::from_secs(61), 3, w)
            .is_ok());
        rl.clear("alice");
        assert!(rl.check("alice", t0, 3, w).is_ok());
    }

    #[test]
    fn sessions_and_csrf() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let token = s
            .start("alice", t0, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no randomness"));
        let session = s
            .get(&token, t0)
            .cloned()
            .unwrap_or_else(|| panic!("no session"));
        assert_eq!(session.username, "alice");
        assert!(csrf_ok(&session, &session.csrf));
        assert!(!csrf_ok(&session, ""));
        assert!(!csrf_ok(&session, "nope"));
        assert!(s.get(&token, t0 + Duration::from_secs(11)).is_none());
        s.end(&token);
        assert!(s.get(&token, t0).is_none());
    }

    #[test]
    fn basic_header() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6cDpzcw=="),
            Some(("alice".into(), "p:ss".into()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!"), None);
    }

    #[test]
    fn tokens() {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let exp = chrono::Utc::now().timestamp() + 60;
        let claims = serde_json::json!({"sub": "1", "exp": exp, "aud": "apache-airflow"});
        let token = encode(
            &Header::new(jsonwebtoken::Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ok = validate_token(&token, b"s3cret", "HS512", Some("apache-airflow"));
        assert_eq!(ok.map(|c| c.sub), Ok("1".to_owned()));
        assert!(validate_token(&token, b"other", "HS512", Some("apache-airflow")).is_err());
        assert!(validate_token(&token, b"s3cret", "HS512", Some("elsewhere")).is_err());
        assert!(validate_token(&token, b"s3cret", "RS256", None).is_err());
    }
}
