//! JWT authentication: the algorithm is fixed by configuration (a token's
//! own `alg` is only compared with it, never trusted), `exp`, `nbf`, `iss`
//! and `aud` are checked, the user id comes from `sub`, and optional claims
//! carry the display name and the channels a token allows.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

use crate::config::{Algorithm, AuthConfig, ConfigError};

/// Who a valid token says the client is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The user id (`sub`).
    pub user: String,
    /// The display name, when the token has one.
    pub name: Option<String>,
    /// The channels the token allows, when it restricts them.
    pub channels: Option<Vec<String>>,
    /// When the token expires (`exp`, seconds since the Unix epoch), if it
    /// does: past it, every command of the connection is refused with
    /// `token_expired` until the client refreshes its token.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

impl Identity {
    /// Whether the token has expired.
    pub fn expired(&self) -> bool {
        self.expires_at.is_some_and(|exp| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            now >= exp
        })
    }
}

/// Why a token was refused. Each has a stable code for clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was given.
    #[error("a token is required")]
    Missing,
    /// Not a JWT.
    #[error("the token is malformed")]
    Malformed,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// Signed with another algorithm than the configured one.
    #[error("the token's algorithm is not accepted")]
    WrongAlgorithm,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer (or is absent while one is
    /// configured).
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not include the configured audience (or is absent while
    /// one is configured).
    #[error("the token's audience is not accepted")]
    WrongAudience,
    /// No `sub`, a configured `iss` or `aud` missing, or claims of the
    /// wrong type (such as an `exp` that is not a number).
    #[error("the token has no valid subject")]
    BadClaims,
}

impl AuthError {
    /// The stable code sent to clients.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Malformed => "token_malformed",
            AuthError::BadSignature => "token_bad_signature",
            AuthError::WrongAlgorithm => "token_wrong_algorithm",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongIssuer => "token_wrong_issuer",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::BadClaims => "token_bad_claims",
        }
    }
}

fn algorithm(a: Algorithm) -> jsonwebtoken::Algorithm {
    match a {
        Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
    }
}

/// Verifies tokens (and, with the development login, issues them).
pub struct Verifier {
    algorithm: jsonwebtoken::Algorithm,
    key: DecodingKey,
    validation: Validation,
    name_claim: String,
    channels_claim: String,
    /// Present only for the development login (an HS256 secret of its own).
    dev_key: Option<EncodingKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("dev_login", &self.dev_key.is_some())
            .finish()
    }
}

impl Verifier {
    /// A verifier for the configuration. Without a configured key and with
    /// the development login on, a random HS256 secret is made for this
    /// process: dev tokens verify, and nothing else does.
    pub fn new(cfg: &AuthConfig) -> Result<Self, ConfigError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random source is unavailable");
        Self::with_dev_secret(cfg, &secret)
    }

    /// Like [`Verifier::new`], with the development login's HS256 secret
    /// given (the server keeps one in its data directory, so development
    /// tokens stay valid across restarts).
    pub fn with_dev_secret(cfg: &AuthConfig, dev_secret: &[u8]) -> Result<Self, ConfigError> {
        let key_err = |key: &str, reason: String| ConfigError {
            key: key.into(),
            reason,
        };
        let (alg, key, dev_key) = if cfg.has_key() {
            let alg = algorithm(cfg.algorithm);
            let key = match cfg.algorithm {
                Algorithm::HS256 => {
                    DecodingKey::from_secret(cfg.secret.as_deref().unwrap_or_default().as_bytes())
                }
                Algorithm::RS256 | Algorithm::ES256 => {
                    let path = cfg.public_key_file.as_ref().expect("has_key checked it");
                    let pem = std::fs::read(path).map_err(|e| {
                        key_err("auth.public_key_file", format!("{}: {e}", path.display()))
                    })?;
                    let parsed = if cfg.algorithm == Algorithm::RS256 {
                        DecodingKey::from_rsa_pem(&pem)
                    } else {
                        DecodingKey::from_ec_pem(&pem)
                    };
                    parsed.map_err(|e| {
                        key_err("auth.public_key_file", format!("not a PEM public key: {e}"))
                    })?
                }
            };
            (alg, key, None)
        } else if cfg.dev_login_enabled() {
            (
                jsonwebtoken::Algorithm::HS256,
                DecodingKey::from_secret(dev_secret),
                Some(EncodingKey::from_secret(dev_secret)),
            )
        } else {
            return Err(key_err(
                "auth.secret",
                "no key is configured and the development login is off: set auth.secret or auth.public_key_file"
                    .into(),
            ));
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
        // A configured issuer or audience is a required claim: the JWT
        // crate skips the check of an absent claim that is not required.
        let mut required = vec!["sub"];
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &cfg.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Verifier {
            algorithm: alg,
            key,
            validation,
            name_claim: cfg.name_claim.clone(),
            channels_claim: cfg.channels_claim.clone(),
            dev_key,
        })
    }

    /// Whether this verifier issues development tokens.
    pub fn dev_login(&self) -> bool {
        self.dev_key.is_some()
    }

    /// Checks a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != self.algorithm {
            return Err(AuthError::WrongAlgorithm);
        }
        let data =
            jsonwebtoken::decode::<HashMap<String, Value>>(token, &self.key, &self.validation)
                .map_err(|e| match e.kind() {
                    ErrorKind::InvalidSignature => AuthError::BadSignature,
                    ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                    ErrorKind::InvalidAudience => AuthError::WrongAudience,
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => AuthError::BadClaims,
                    _ => AuthError::Malformed,
                })?;
        let claims = data.claims;
        // The JWT crate ignores time claims it cannot read (a string or null
        // `exp` would never expire): present, they must be whole seconds.
        for time in ["exp", "nbf", "iat"] {
            if claims.get(time).is_some_and(|v| v.as_u64().is_none()) {
                return Err(AuthError::BadClaims);
            }
        }
        let user = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(AuthError::BadClaims),
        };
        let name = match claims.get(&self.name_claim) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(AuthError::BadClaims),
        };
        let channels = match claims.get(&self.channels_claim) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned).ok_or(AuthError::BadClaims))
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err(AuthError::BadClaims),
        };
        let expires_at = claims.get("exp").and_then(Value::as_u64);
        Ok(Identity {
            user,
            name,
            channels,
            expires_at,
        })
    }

    /// Issues a development token (only with the development login).
    pub fn issue_dev_token(&self, user: &str, name: Option<&str>, ttl_secs: u64) -> Option<String> {
        let key = self.dev_key.as_ref()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), Value::from(user));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + ttl_secs));
        if let Some(name) = name {
            claims.insert(self.name_claim.clone(), Value::from(name));
        }
        jsonwebtoken::encode(&Header::new(jsonwebtoken::Algorithm::HS256), &claims, key).ok()
    }
}
