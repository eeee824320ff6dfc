//! JWT sessions: HS256 access tokens (900 s) and single-use rotating refresh tokens in families.
//!
//! Only HS256 is accepted (`alg: none` and every other algorithm are refused by the validation
//! set), and the token type is checked, so a refresh token is never an access token. Each sign-in
//! starts a family; a refresh spends its token and issues the next pair in the same family.
//! Presenting a spent refresh token again is treated as theft: the whole family is revoked, and
//! its access tokens stop working at once.
//!
//! Tokens are bound to the deployment that minted them: `aud` is its SIWE domain and `iss` its
//! public base URL, and both are required and checked, so a token minted by another deployment
//! that happens to share the signing secret is refused (401 `invalid_token`).

use std::time::Duration;

use dashmap::DashSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::{AuthError, AuthMode, Principal};
use crate::storage::{RefreshRecord, Storage, StorageError, now_ms};
use crate::wallet::Wallet;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: u64,
    exp: u64,
    typ: String,
    jti: String,
    fam: String,
}

/// The token pair of the Vectorway reference.
#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

/// Issues and checks session tokens.
pub struct Sessions {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
    audience: String,
    issuer: String,
    store: Storage,
    access_ttl: Duration,
    refresh_ttl: Duration,
    revoked: DashSet<String>,
    rng: SystemRandom,
}

impl Sessions {
    /// Sessions signed with `secret` whose tokens carry `aud: audience` (the SIWE domain) and
    /// `iss: issuer` (the public base URL), and are accepted only with both.
    pub async fn new(
        secret: &[u8],
        audience: &str,
        issuer: &str,
        store: Storage,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> Result<Self, StorageError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 5;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let revoked = store.revoked_families().await?.into_iter().collect();
        Ok(Self {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
            validation,
            audience: audience.to_string(),
            issuer: issuer.to_string(),
            store,
            access_ttl,
            refresh_ttl,
            revoked,
            rng: SystemRandom::new(),
        })
    }

    /// A random 128-bit id; no randomness is an error, never a predictable id.
    fn id(&self) -> Result<String, AuthError> {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b).map_err(|_| AuthError::Randomness)?;
        Ok(hex::encode(b))
    }

    fn token(
        &self,
        wallet: &Wallet,
        typ: &str,
        jti: &str,
        family: &str,
        ttl: Duration,
    ) -> Result<(String, u64), AuthError> {
        let now = now_ms() / 1000;
        let claims = Claims {
            sub: wallet.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl.as_secs(),
            typ: typ.into(),
            jti: jti.into(),
            fam: family.into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .map(|t| (t, claims.exp))
            .map_err(|_| AuthError::InvalidToken)
    }

    async fn pair(&self, wallet: &Wallet, family: &str) -> Result<TokenPair, AuthError> {
        let (access_token, _) =
            self.token(wallet, "access", &self.id()?, family, self.access_ttl)?;
        let jti = self.id()?;
        let (refresh_token, exp) = self.token(wallet, "refresh", &jti, family, self.refresh_ttl)?;
        let rec = RefreshRecord {
            family: family.into(),
            wallet: *wallet,
            expires_at: exp,
            used: false,
        };
        self.store
            .put_refresh(&jti, &rec)
            .await
            .map_err(AuthError::Storage)?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            token_type: "bearer",
            expires_in: self.access_ttl.as_secs(),
        })
    }

    /// A new session (a new family) for a wallet that just signed in.
    pub async fn issue(&self, wallet: &Wallet) -> Result<TokenPair, AuthError> {
        let pair = self.pair(wallet, &self.id()?).await?;
        self.store.flush().await.map_err(AuthError::Storage)?;
        Ok(pair)
    }

    fn decode(&self, token: &str, typ: &str) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation)
            .map_err(|_| AuthError::InvalidToken)?;
        if data.claims.typ != typ || self.revoked.contains(&data.claims.fam) {
            return Err(AuthError::InvalidToken);
        }
        Ok(data.claims)
    }

    /// Checks an access token.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let c = self.decode(token, "access")?;
        let wallet = c.sub.parse().map_err(|_| AuthError::InvalidToken)?;
        Ok(Principal {
            wallet,
            key_id: None,
            mode: AuthMode::Jwt,
        })
    }

    /// Spends a refresh token and returns the next pair; reuse revokes the family.
    pub async fn refresh(&self, token: &str) -> Result<TokenPair, AuthError> {
        let c = self.decode(token, "refresh")?;
        let rec = self
            .store
            .spend_refresh(&c.jti)
            .await
            .map_err(AuthError::Storage)?
            .ok_or(AuthError::InvalidToken)?;
        if rec.used {
            self.revoke_family(&rec.family).await?;
            return Err(AuthError::RefreshReused);
        }
        let pair = self.pair(&rec.wallet, &rec.family).await?;
        self.store.flush().await.map_err(AuthError::Storage)?;
        Ok(pair)
    }

    /// Logs out: the token's family (and every token in it) stops working.
    pub async fn revoke(&self, token: &str) -> Result<(), AuthError> {
        let c = self.decode(token, "refresh")?;
        self.revoke_family(&c.fam).await
    }

    /// Takes family revocations another gateway wrote (`Storage::auth_changes`).
    pub fn apply_revocations(&self, families: &[String]) {
        for f in families {
            self.revoked.insert(f.clone());
        }
    }

    async fn revoke_family(&self, family: &str) -> Result<(), AuthError> {
        self.revoked.insert(family.to_string());
        self.store
            .revoke_family(family, now_ms() / 1000)
            .await
            .map_err(AuthError::Storage)?;
        self.store.flush().await.map_err(AuthError::Storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    async fn sessions(dir: &std::path::Path) -> Sessions {
        bound(dir, "api.example.com", "https://api.example.com").await
    }

    async fn bound(dir: &std::path::Path, audience: &str, issuer: &str) -> Sessions {
        let store = Storage::embedded(crate::storage::Store::open_when_free(dir).unwrap());
        Sessions::new(
            &[7u8; 32],
            audience,
            issuer,
            store,
            Duration::from_secs(900),
            Duration::from_secs(86_400),
        )
        .await
        .unwrap()
    }

    fn w() -> Wallet {
        "0x1111111111111111111111111111111111111111"
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn rotation_and_reuse_revokes_the_family() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path()).await;
        let first = s.issue(&w()).await.unwrap();
        assert_eq!(s.authenticate(&first.access_token).unwrap().wallet, w());
        assert!(
            s.authenticate(&first.refresh_token).is_err(),
            "a refresh token is not an access token"
        );
        let second = s.refresh(&first.refresh_token).await.unwrap();
        assert!(s.authenticate(&second.access_token).is_ok());
        assert!(matches!(
            s.refresh(&first.refresh_token).await,
            Err(AuthError::RefreshReused)
        ));
        assert!(
            s.authenticate(&second.access_token).is_err(),
            "the family is revoked"
        );
        assert!(s.refresh(&second.refresh_token).await.is_err());
        // Another session of the same wallet is unaffected; revoke ends it.
        let other = s.issue(&w()).await.unwrap();
        assert!(s.authenticate(&other.access_token).is_ok());
        s.revoke(&other.refresh_token).await.unwrap();
        assert!(s.authenticate(&other.access_token).is_err());
        drop(s);
        let again = sessions(dir.path()).await;
        assert!(
            again.authenticate(&second.access_token).is_err(),
            "revocations survive a restart"
        );
    }

    #[tokio::test]
    async fn alg_none_and_foreign_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path()).await;
        let good = s.issue(&w()).await.unwrap().access_token;
        let payload = good.split('.').nth(1).unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{payload}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#)
        );
        assert!(s.authenticate(&none).is_err());
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::from_slice::<serde_json::Value>(&b64.decode(payload).unwrap()).unwrap(),
            &EncodingKey::from_secret(&[7u8; 32]),
        )
        .unwrap();
        assert!(s.authenticate(&hs512).is_err(), "algorithm confusion");
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::from_slice::<serde_json::Value>(&b64.decode(payload).unwrap()).unwrap(),
            &EncodingKey::from_secret(&[8u8; 32]),
        )
        .unwrap();
        assert!(s.authenticate(&forged).is_err());
        assert!(s.authenticate("not.a.jwt").is_err());
    }

    #[tokio::test]
    async fn tokens_of_another_deployment_with_the_same_secret_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let here = sessions(dir.path()).await;
        let good = here.issue(&w()).await.unwrap();
        assert!(here.authenticate(&good.access_token).is_ok());
        drop(here);
        // Same secret, same store; another domain, another base URL, or both.
        for (aud, iss) in [
            ("evil.example.com", "https://api.example.com"),
            ("api.example.com", "https://evil.example.com"),
            ("evil.example.com", "https://evil.example.com"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let there = bound(dir.path(), aud, iss).await;
            let theirs = there.issue(&w()).await.unwrap();
            drop(there);
            let dir2 = tempfile::tempdir().unwrap();
            let here = sessions(dir2.path()).await;
            assert!(
                matches!(
                    here.authenticate(&theirs.access_token),
                    Err(AuthError::InvalidToken)
                ),
                "aud {aud}, iss {iss}"
            );
            assert!(matches!(
                here.refresh(&theirs.refresh_token).await,
                Err(AuthError::InvalidToken)
            ));
        }
        // A token without `aud` (as minted before tokens were bound) is refused too.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = good.access_token.split('.').nth(1).unwrap();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
        claims.as_object_mut().unwrap().remove("aud");
        let unbound = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[7u8; 32]),
        )
        .unwrap();
        let dir3 = tempfile::tempdir().unwrap();
        assert!(sessions(dir3.path()).await.authenticate(&unbound).is_err());
    }
}
