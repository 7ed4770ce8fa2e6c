//! Access tokens: JWT HS256 signed with the API secret, carrying the room, identity and grants.
//!
//! The application backend (which knows who is a teacher) mints tokens; the server only checks
//! them, so Aula needs no user database. The signing and checking are `jsonwebtoken`'s; this
//! module decides which claims exist and what a valid token must contain.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aula_protocol::{Permissions, PublishSource, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// Key `devkey` signs dev-mode tokens. Public knowledge: dev mode is insecure by design.
const DEV_KEY: &str = "devkey";
/// The published dev secret; at least 32 bytes like every accepted secret.
const DEV_SECRET: &str = "devsecret-change-me-in-production-0123456789";

/// Longest room name or identity accepted, in bytes. They end up in logs, maps and every
/// participant's messages, so they must stay small.
pub const MAX_ID_BYTES: usize = 128;
/// Longest display name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest token accepted, in bytes; a real one is well under 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated between the backend that mints and this server, in seconds.
const LEEWAY_SECS: u64 = 30;

/// The key pair tokens are signed with. `key` is public (it is the `iss` claim), `secret` is not.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeys {
    pub key: String,
    pub secret: String,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ApiKeys {
    /// The well-known development key pair, used when no keys are configured.
    pub fn dev() -> Self {
        Self {
            key: DEV_KEY.to_owned(),
            secret: DEV_SECRET.to_owned(),
        }
    }

    /// Whether these are the dev keys (anyone can mint tokens for them).
    pub fn is_dev(&self) -> bool {
        self.key == DEV_KEY && self.secret == DEV_SECRET
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The API key whose secret signed the token.
    pub iss: String,
    /// The participant's identity: stable across sessions; one session per identity and room.
    pub sub: String,
    /// Display name; defaults to the identity.
    #[serde(default)]
    pub name: String,
    pub room: String,
    pub role: Role,
    pub can_publish: bool,
    /// Which sources `can_publish` covers. Absent in tokens minted before grants had sources,
    /// which then keep meaning "any source".
    #[serde(default = "all_sources")]
    pub publish_sources: Vec<PublishSource>,
    pub can_subscribe: bool,
    /// May send chat and data messages. Absent in older tokens, which allowed it.
    #[serde(default = "yes")]
    pub can_publish_data: bool,
    /// Invisible to the others (a recorder, an inspector): never announced, never publishes.
    #[serde(default)]
    pub hidden: bool,
    /// May use the admin HTTP API with this token as a bearer token.
    #[serde(default)]
    pub admin: bool,
    /// May start and stop recording the room. Absent: the role's default (see
    /// [`AccessClaims::may_record`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_record: Option<bool>,
    /// May list and play back the server's recordings (`/recordings`, `/playback/{id}`), of
    /// every room: reviewing is a job (support QA), not a seat in one room. Absent: the role's
    /// default (see [`AccessClaims::may_review`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_review: Option<bool>,
    /// The region the participant is in (as in `[cluster] region`), from the school's backend:
    /// in a cluster, the room's origin places the participant's media on a node of that region
    /// (see `cluster::relay`). Absent: on the origin itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Expiry, seconds since the Unix epoch. Only checked at join: a session outlives its token.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: u64,
}

impl AccessClaims {
    /// Claims valid from now for `ttl`, with the role's default grants (see
    /// [`role_permissions`]): a student only subscribes until invited on stage. `iss` is left
    /// empty: [`mint`] fills it with the signing key.
    pub fn new(room: &str, identity: &str, role: Role, ttl: Duration) -> Self {
        let now = unix_now();
        let grants = role_permissions(role);
        Self {
            iss: String::new(),
            sub: identity.to_owned(),
            name: identity.to_owned(),
            room: room.to_owned(),
            role,
            can_publish: grants.can_publish,
            publish_sources: grants.publish_sources,
            can_subscribe: grants.can_subscribe,
            can_publish_data: grants.can_publish_data,
            hidden: false,
            admin: false,
            can_record: None,
            can_review: None,
            region: None,
            exp: now.saturating_add(ttl.as_secs()),
            nbf: now,
        }
    }

    /// The permissions a session starts with. Moderation follows the role (staff), except for
    /// hidden participants, which only watch.
    pub fn permissions(&self) -> Permissions {
        let mut sources = self.publish_sources.clone();
        sources.sort_by_key(|s| *s as u8);
        sources.dedup();
        Permissions {
            can_publish: self.can_publish && !self.hidden,
            publish_sources: sources,
            can_subscribe: self.can_subscribe,
            can_publish_data: self.can_publish_data && !self.hidden,
            hidden: self.hidden,
            can_moderate: self.role.is_staff() && !self.hidden,
        }
    }

    /// Whether this participant may start and stop recording its room: as the token says, else
    /// teachers (a class) and agents (a support session) may.
    pub fn may_record(&self) -> bool {
        self.can_record
            .unwrap_or(matches!(self.role, Role::Teacher | Role::Agent))
    }

    /// Whether this token may list and play back recordings: as the token says, else agents
    /// (they review support sessions) and admins may.
    pub fn may_review(&self) -> bool {
        self.can_review
            .unwrap_or(self.admin || matches!(self.role, Role::Agent))
    }

    /// Sets the display name.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Checks the claims' shape (non-empty, bounded, printable); times are checked by [`verify`].
    fn check_shape(&self) -> Result<(), TokenError> {
        check_id("room", &self.room)?;
        check_id("sub", &self.sub)?;
        if let Some(region) = &self.region {
            check_id("region", region)?;
        }
        if self.name.len() > MAX_NAME_BYTES {
            return Err(TokenError::InvalidClaim(format!(
                "name longer than {MAX_NAME_BYTES} bytes"
            )));
        }
        if self.name.chars().any(char::is_control) {
            return Err(TokenError::InvalidClaim(
                "name contains control characters".into(),
            ));
        }
        Ok(())
    }
}

/// The default grants of each role, used by [`AccessClaims::new`] (and so by `aula token` and
/// `/api/dev-token` unless overridden).
///
/// - teacher: publishes every source, moderates;
/// - assistant: publishes camera and microphone, moderates (revocable by the teacher);
/// - student: subscribes and chats; publishes only once invited on stage;
/// - agent and learner: every source, as a support session needs screen + camera both ways.
pub fn role_permissions(role: Role) -> Permissions {
    let sources = match role {
        Role::Teacher | Role::Agent | Role::Learner => PublishSource::ALL.to_vec(),
        Role::Assistant => vec![PublishSource::Camera, PublishSource::Microphone],
        Role::Student => Vec::new(),
    };
    Permissions {
        can_publish: !sources.is_empty(),
        publish_sources: sources,
        can_subscribe: true,
        can_publish_data: true,
        hidden: false,
        can_moderate: role.is_staff(),
    }
}

/// The sources a student invited on stage may publish.
pub fn stage_sources() -> Vec<PublishSource> {
    vec![PublishSource::Camera, PublishSource::Microphone]
}

fn all_sources() -> Vec<PublishSource> {
    PublishSource::ALL.to_vec()
}

fn yes() -> bool {
    true
}

fn check_id(field: &str, value: &str) -> Result<(), TokenError> {
    if value.trim().is_empty() {
        return Err(TokenError::InvalidClaim(format!("{field} is empty")));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(TokenError::InvalidClaim(format!(
            "{field} longer than {MAX_ID_BYTES} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(TokenError::InvalidClaim(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

/// Why a token was refused (or could not be made).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf in the future)")]
    NotYetValid,
    #[error("bad token signature")]
    BadSignature,
    #[error("token issued for another API key")]
    WrongIssuer,
    #[error("token uses an unsupported algorithm (HS256 only)")]
    WrongAlgorithm,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token too long ({0} bytes)")]
    TooLong(usize),
    #[error("invalid claim: {0}")]
    InvalidClaim(String),
    #[error("cannot sign token: {0}")]
    Signing(String),
}

/// Signs `claims` with `keys`. `iss` is set to `keys.key` (the issuer is whoever holds the
/// secret), and the claims are checked so that no unusable token is handed out.
pub fn mint(keys: &ApiKeys, claims: &AccessClaims) -> Result<String, TokenError> {
    claims.check_shape()?;
    let claims = AccessClaims {
        iss: keys.key.clone(),
        ..claims.clone()
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(keys.secret.as_bytes()),
    )
    .map_err(|e| TokenError::Signing(e.to_string()))
}

/// Checks signature, algorithm, issuer, `exp`, `nbf` and the claims' shape; returns the claims.
pub fn verify(keys: &ApiKeys, token: &str) -> Result<AccessClaims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong(token.len()));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation.set_issuer(&[&keys.key]);
    let data = jsonwebtoken::decode::<AccessClaims>(
        token,
        &DecodingKey::from_secret(keys.secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => TokenError::WrongAlgorithm,
        _ => TokenError::Malformed(e.to_string()),
    })?;
    data.claims.check_shape()?;
    Ok(data.claims)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        // A clock before 1970 is broken; 0 makes every token look expired, the safe failure.
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys {
            key: "school".into(),
            secret: "s".repeat(40),
        }
    }

    fn teacher() -> AccessClaims {
        AccessClaims::new("math", "alice", Role::Teacher, Duration::from_secs(600))
    }

    #[test]
    fn roundtrip_keeps_claims_and_sets_issuer() {
        let token = mint(&keys(), &teacher().with_name("Alice A.")).expect("mint");
        let claims = verify(&keys(), &token).expect("verify");
        assert_eq!(claims.iss, "school");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.name, "Alice A.");
        assert_eq!(claims.room, "math");
        assert_eq!(claims.role, Role::Teacher);
    }

    #[test]
    fn grants_follow_the_role() {
        let t = teacher();
        assert!(t.can_publish && t.can_subscribe);
        let s = AccessClaims::new("math", "bob", Role::Student, Duration::from_secs(60));
        assert!(!s.can_publish);
        assert!(s.can_subscribe);
        assert_eq!(s.name, "bob");
        assert!(s.exp >= s.nbf + 60);
    }

    #[test]
    fn every_role_has_defaults_and_hidden_never_publishes() {
        let a = AccessClaims::new("math", "asst", Role::Assistant, Duration::from_secs(60));
        let p = a.permissions();
        assert!(p.can_moderate && p.can_publish);
        assert_eq!(
            p.publish_sources,
            vec![PublishSource::Camera, PublishSource::Microphone]
        );
        for role in [Role::Agent, Role::Learner] {
            let p = AccessClaims::new("help", "x", role, Duration::from_secs(60)).permissions();
            assert!(p.allows(aula_protocol::TrackSource::ScreenShare));
            assert!(!p.can_moderate);
        }
        let mut recorder = AccessClaims::new("math", "rec", Role::Teacher, Duration::from_secs(60));
        recorder.hidden = true;
        let p = recorder.permissions();
        assert!(!p.can_publish && !p.can_moderate && p.can_subscribe && p.hidden);
    }

    #[test]
    fn tokens_without_new_grants_keep_their_meaning() {
        // A token minted before sources, data, hidden and admin existed.
        let old = serde_json::json!({
            "iss": "school", "sub": "alice", "room": "math", "role": "teacher",
            "can_publish": true, "can_subscribe": true, "exp": unix_now() + 60,
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &old,
            &EncodingKey::from_secret(keys().secret.as_bytes()),
        )
        .expect("encode");
        let claims = verify(&keys(), &token).expect("old token verifies");
        assert_eq!(claims.publish_sources, PublishSource::ALL.to_vec());
        assert!(claims.can_publish_data && !claims.hidden && !claims.admin);
    }

    #[test]
    fn dev_keys_are_recognised() {
        let dev = ApiKeys::dev();
        assert!(dev.is_dev());
        assert!(dev.secret.len() >= 32);
        assert!(!keys().is_dev());
        assert!(!format!("{dev:?}").contains(&dev.secret));
    }

    #[test]
    fn tampered_signature_is_refused() {
        let token = mint(&keys(), &teacher()).expect("mint");
        // Flip one character of the signature (the third part).
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let sig = &mut parts[2];
        let first = sig.remove(0);
        sig.insert(0, if first == 'A' { 'B' } else { 'A' });
        let tampered = parts.join(".");
        assert_eq!(verify(&keys(), &tampered), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_payload_is_refused() {
        // A student rewrites its claims to teacher and keeps the old signature.
        let student = AccessClaims::new("math", "bob", Role::Student, Duration::from_secs(60));
        let token = mint(&keys(), &student).expect("mint");
        let forged_claims = mint(&keys(), &teacher()).expect("mint");
        let parts: Vec<&str> = token.split('.').collect();
        let forged_parts: Vec<&str> = forged_claims.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_parts[1], parts[2]);
        assert_eq!(verify(&keys(), &forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn other_secret_is_refused() {
        let token = mint(&keys(), &teacher()).expect("mint");
        let other = ApiKeys {
            key: "school".into(),
            secret: "t".repeat(40),
        };
        assert_eq!(verify(&other, &token), Err(TokenError::BadSignature));
    }

    #[test]
    fn wrong_issuer_is_refused() {
        // Same secret, different key name: the token names another issuer.
        let token = mint(&keys(), &teacher()).expect("mint");
        let other = ApiKeys {
            key: "other-school".into(),
            secret: keys().secret,
        };
        assert_eq!(verify(&other, &token), Err(TokenError::WrongIssuer));
    }

    #[test]
    fn expired_is_refused() {
        let mut claims = teacher();
        claims.nbf = unix_now() - 7200;
        claims.exp = unix_now() - 3600;
        let token = mint(&keys(), &claims).expect("mint");
        assert_eq!(verify(&keys(), &token), Err(TokenError::Expired));
    }

    #[test]
    fn expiry_within_leeway_is_accepted() {
        let mut claims = teacher();
        claims.exp = unix_now() - 5;
        let token = mint(&keys(), &claims).expect("mint");
        assert!(verify(&keys(), &token).is_ok());
    }

    #[test]
    fn not_yet_valid_is_refused() {
        let mut claims = teacher();
        claims.nbf = unix_now() + 3600;
        claims.exp = unix_now() + 7200;
        let token = mint(&keys(), &claims).expect("mint");
        assert_eq!(verify(&keys(), &token), Err(TokenError::NotYetValid));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in ["", "x", "a.b.c", "....", "eyJ.eyJ.x", "\u{0}\u{1}"] {
            match verify(&keys(), bad) {
                Err(TokenError::Malformed(_) | TokenError::BadSignature) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            verify(&keys(), &long),
            Err(TokenError::TooLong(MAX_TOKEN_BYTES + 1))
        );
    }

    #[test]
    fn teachers_and_agents_may_record_unless_the_token_says_otherwise() {
        let claims = |role| AccessClaims::new("math", "a", role, Duration::from_secs(60));
        for role in [Role::Teacher, Role::Agent] {
            assert!(claims(role).may_record(), "{role:?}");
        }
        for role in [Role::Assistant, Role::Student, Role::Learner] {
            assert!(!claims(role).may_record(), "{role:?}");
        }
        let granted = AccessClaims {
            can_record: Some(true),
            ..claims(Role::Student)
        };
        let refused = AccessClaims {
            can_record: Some(false),
            ..claims(Role::Teacher)
        };
        assert!(granted.may_record() && !refused.may_record());
        // An older token, without the claim, keeps the role's default.
        let keys = keys();
        let token = mint(&keys, &claims(Role::Agent)).unwrap();
        assert_eq!(verify(&keys, &token).unwrap().can_record, None);
    }

    #[test]
    fn agents_and_admins_may_review_unless_the_token_says_otherwise() {
        let claims = |role| AccessClaims::new("desk", "a", role, Duration::from_secs(60));
        assert!(claims(Role::Agent).may_review());
        for role in [Role::Teacher, Role::Assistant, Role::Student, Role::Learner] {
            assert!(!claims(role).may_review(), "{role:?}");
        }
        let admin = AccessClaims {
            admin: true,
            ..claims(Role::Student)
        };
        let granted = AccessClaims {
            can_review: Some(true),
            ..claims(Role::Teacher)
        };
        let refused = AccessClaims {
            can_review: Some(false),
            ..claims(Role::Agent)
        };
        assert!(admin.may_review() && granted.may_review() && !refused.may_review());
        let keys = keys();
        let token = mint(&keys, &claims(Role::Agent)).unwrap();
        assert_eq!(verify(&keys, &token).unwrap().can_review, None);
    }

    #[test]
    fn other_algorithm_is_refused() {
        // An HS512 token with the right secret must still be refused: only HS256 is accepted.
        let claims = AccessClaims {
            iss: "school".into(),
            ..teacher()
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(keys().secret.as_bytes()),
        )
        .expect("encode");
        assert_eq!(verify(&keys(), &token), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn bad_shapes_are_refused_at_mint_and_verify() {
        let empty_room = AccessClaims::new("", "alice", Role::Teacher, Duration::from_secs(60));
        assert!(matches!(
            mint(&keys(), &empty_room),
            Err(TokenError::InvalidClaim(_))
        ));
        let long_id = "i".repeat(MAX_ID_BYTES + 1);
        let long = AccessClaims::new("math", &long_id, Role::Teacher, Duration::from_secs(60));
        assert!(matches!(
            mint(&keys(), &long),
            Err(TokenError::InvalidClaim(_))
        ));

        // A token minted elsewhere with an empty identity is refused by verify as well.
        let claims = AccessClaims {
            iss: "school".into(),
            sub: " ".into(),
            ..teacher()
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(keys().secret.as_bytes()),
        )
        .expect("encode");
        assert!(matches!(
            verify(&keys(), &token),
            Err(TokenError::InvalidClaim(_))
        ));
    }
}
