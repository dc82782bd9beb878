//! JWT verification against tokens signed with real keys (test keys in
//! `tests/keys/`, made with openssl for these tests only).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_server::auth::{AuthError, Verifier};
use switchboard_server::config::{Algorithm, AuthConfig};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn keys() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn hs_config() -> AuthConfig {
    AuthConfig {
        secret: Some(SECRET.into()),
        ..AuthConfig::default()
    }
}

#[test]
fn hs256_token_names_the_user_with_name_and_channels() {
    let v = Verifier::new(&hs_config()).unwrap();
    assert!(!v.dev_login());
    let token = hs256(
        &json!({"sub": "42", "name": "Ada", "channels": ["chat:lobby"], "exp": now() + 60}),
        SECRET,
    );
    let id = v.verify(&token).unwrap();
    assert_eq!(id.user, "42");
    assert_eq!(id.name.as_deref(), Some("Ada"));
    assert_eq!(id.channels, Some(vec!["chat:lobby".to_owned()]));
}

#[test]
fn bad_signature_expired_not_yet_valid_and_missing_are_refused() {
    let v = Verifier::new(&hs_config()).unwrap();
    let other = hs256(
        &json!({"sub": "42", "exp": now() + 60}),
        "another-secret-another-secret-xx",
    );
    assert_eq!(v.verify(&other), Err(AuthError::BadSignature));
    let expired = hs256(&json!({"sub": "42", "exp": now() - 10}), SECRET);
    assert_eq!(v.verify(&expired), Err(AuthError::Expired));
    let early = hs256(&json!({"sub": "42", "nbf": now() + 3600}), SECRET);
    assert_eq!(v.verify(&early), Err(AuthError::NotYetValid));
    let no_sub = hs256(&json!({"exp": now() + 60}), SECRET);
    assert_eq!(v.verify(&no_sub), Err(AuthError::BadClaims));
    assert_eq!(v.verify(""), Err(AuthError::Missing));
    assert_eq!(v.verify("not.a.jwt"), Err(AuthError::Malformed));
    assert_eq!(AuthError::Expired.code(), "token_expired");
}

#[test]
fn the_algorithm_comes_from_the_configuration_not_the_token() {
    let cfg = AuthConfig {
        algorithm: Algorithm::RS256,
        public_key_file: Some(keys().join("rsa-public.pem")),
        ..AuthConfig::default()
    };
    let v = Verifier::new(&cfg).unwrap();
    // The classic confusion: an HS256 token "signed" with the RSA public key.
    let public = std::fs::read_to_string(keys().join("rsa-public.pem")).unwrap();
    let forged = hs256(&json!({"sub": "admin", "exp": now() + 60}), &public);
    assert_eq!(v.verify(&forged), Err(AuthError::WrongAlgorithm));
    // alg "none": header {"alg":"none"}, no signature.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "admin"}))
    );
    assert!(matches!(
        v.verify(&none),
        Err(AuthError::Malformed | AuthError::WrongAlgorithm)
    ));
}

#[test]
fn rs256_and_es256_tokens_verify_with_their_public_keys() {
    let rsa = Verifier::new(&AuthConfig {
        algorithm: Algorithm::RS256,
        public_key_file: Some(keys().join("rsa-public.pem")),
        ..AuthConfig::default()
    })
    .unwrap();
    let key =
        EncodingKey::from_rsa_pem(&std::fs::read(keys().join("rsa-private.pem")).unwrap()).unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "7", "exp": now() + 60}),
        &key,
    )
    .unwrap();
    assert_eq!(rsa.verify(&token).unwrap().user, "7");

    let ec = Verifier::new(&AuthConfig {
        algorithm: Algorithm::ES256,
        public_key_file: Some(keys().join("ec-public.pem")),
        ..AuthConfig::default()
    })
    .unwrap();
    let key =
        EncodingKey::from_ec_pem(&std::fs::read(keys().join("ec-private.pem")).unwrap()).unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({"sub": "8", "exp": now() + 60}),
        &key,
    )
    .unwrap();
    assert_eq!(ec.verify(&token).unwrap().user, "8");
    // An RS256 token is not accepted where ES256 is configured.
    let rs_token = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "8", "exp": now() + 60}),
        &EncodingKey::from_rsa_pem(&std::fs::read(keys().join("rsa-private.pem")).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ec.verify(&rs_token), Err(AuthError::WrongAlgorithm));
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let v = Verifier::new(&AuthConfig {
        issuer: Some("https://auth.example".into()),
        audience: Some("switchboard".into()),
        ..hs_config()
    })
    .unwrap();
    let good = hs256(
        &json!({"sub": "1", "iss": "https://auth.example", "aud": "switchboard", "exp": now() + 60}),
        SECRET,
    );
    assert!(v.verify(&good).is_ok());
    let wrong_iss = hs256(
        &json!({"sub": "1", "iss": "https://evil.example", "aud": "switchboard", "exp": now() + 60}),
        SECRET,
    );
    assert_eq!(v.verify(&wrong_iss), Err(AuthError::WrongIssuer));
    let wrong_aud = hs256(
        &json!({"sub": "1", "iss": "https://auth.example", "aud": "other", "exp": now() + 60}),
        SECRET,
    );
    assert_eq!(v.verify(&wrong_aud), Err(AuthError::WrongAudience));
    // A configured claim is required: a signed token without it is refused.
    let no_aud = hs256(
        &json!({"sub": "1", "iss": "https://auth.example", "exp": now() + 60}),
        SECRET,
    );
    assert_eq!(v.verify(&no_aud), Err(AuthError::BadClaims));
    let no_iss = hs256(
        &json!({"sub": "1", "aud": "switchboard", "exp": now() + 60}),
        SECRET,
    );
    assert_eq!(v.verify(&no_iss), Err(AuthError::BadClaims));
    let neither = hs256(&json!({"sub": "1", "exp": now() + 60}), SECRET);
    assert_eq!(v.verify(&neither), Err(AuthError::BadClaims));
}

#[test]
fn time_claims_that_are_not_numbers_are_refused() {
    let v = Verifier::new(&hs_config()).unwrap();
    for (claim, value) in [
        ("exp", json!("9999999999")),
        ("exp", Value::Null),
        ("exp", json!(-5)),
        ("exp", json!(now() as f64 + 60.5)),
        ("nbf", json!("0")),
        ("iat", json!({})),
    ] {
        let mut claims = json!({"sub": "1"});
        claims[claim] = value.clone();
        let token = hs256(&claims, SECRET);
        assert_eq!(
            v.verify(&token),
            Err(AuthError::BadClaims),
            "{claim} = {value}"
        );
    }
    // Whole seconds are accepted, and a token without `exp` never expires.
    assert!(
        v.verify(&hs256(&json!({"sub": "1", "exp": now() + 60}), SECRET))
            .is_ok()
    );
    assert!(v.verify(&hs256(&json!({"sub": "1"}), SECRET)).is_ok());
}

#[test]
fn the_development_login_issues_tokens_only_without_a_real_key() {
    let dev = Verifier::new(&AuthConfig::default()).unwrap();
    assert!(dev.dev_login());
    let token = dev.issue_dev_token("ada", Some("Ada"), 60).unwrap();
    let id = dev.verify(&token).unwrap();
    assert_eq!((id.user.as_str(), id.name.as_deref()), ("ada", Some("Ada")));
    // A token made with any guessable secret does not verify.
    let guess = hs256(&json!({"sub": "ada", "exp": now() + 60}), SECRET);
    assert_eq!(dev.verify(&guess), Err(AuthError::BadSignature));

    let real = Verifier::new(&hs_config()).unwrap();
    assert!(real.issue_dev_token("ada", None, 60).is_none());

    let off = AuthConfig {
        dev_login: Some(false),
        ..AuthConfig::default()
    };
    let e = Verifier::new(&off).unwrap_err();
    assert_eq!(e.key, "auth.secret");
}
