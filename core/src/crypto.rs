//! Secrets at rest: the master key ring and XChaCha20-Poly1305 sealing.
//!
//! A sealed secret is `version(1) | key_id_len(1) | key_id | nonce(24) | ciphertext+tag`.
//! The associated data binds it to its row (`org_id`, row id, purpose), so a
//! ciphertext copied to another row or org fails to open. Several master keys
//! can be configured (`id1:b64,id2:b64`): the first seals, any of them opens,
//! which is what a rotation needs.

use crate::error::{Error, Result};
use crate::ids::{OrgId, TypedId};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

const VERSION: u8 = 1;

/// A string that must never be printed: `Debug` and `Display` show `[redacted]`,
/// and its memory is zeroed when dropped. A newtype over `secrecy`'s
/// [`SecretString`], so that the rest of the workspace names one type and one
/// method, and so that `Display` exists for format strings that might meet one.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(SecretString::from(s.into()))
    }
    /// The only way to read the value; grep for it when auditing (the name
    /// `secrecy` gives it, so one grep also finds the dependencies' reads).
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One named 256-bit key.
#[derive(Clone)]
struct MasterKey {
    id: String,
    cipher: XChaCha20Poly1305,
    /// A key derived for signing NOTIFY payloads (never used to encrypt).
    notify: [u8; 32],
}

/// The configured master keys; the first one seals new secrets.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl KeyRing {
    /// Parses `TURNSTONE_MASTER_KEY`: comma-separated `<key-id>:<base64 of 32 bytes>`.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut keys = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, b64) = part.split_once(':').ok_or(Error::Crypto("master key must look like <key-id>:<base64>"))?;
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(Error::Crypto("master key id must be 1-64 characters of [A-Za-z0-9_-]"));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| Error::Crypto("master key is not valid base64"))?;
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| Error::Crypto("master key must be 32 bytes"))?;
            if keys.iter().any(|k: &MasterKey| k.id == id) {
                return Err(Error::Crypto("duplicate master key id"));
            }
            let notify = {
                use sha2::{Digest, Sha256};
                Sha256::new().chain_update(b"turnstone notify signing v1\0").chain_update(&bytes).finalize().into()
            };
            keys.push(MasterKey { id: id.to_owned(), cipher, notify });
        }
        if keys.is_empty() {
            return Err(Error::Crypto("no master key given"));
        }
        Ok(Self { keys })
    }

    /// A fresh random key spec, for development and tests.
    pub fn generate_spec(id: &str) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        format!("{id}:{}", base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The key that signs event notifications, derived from the primary master
    /// key: every process given the same `TURNSTONE_MASTER_KEY` derives the same one.
    pub fn notify_key(&self) -> [u8; 32] {
        self.keys[0].notify
    }

    /// Seals `plaintext` for the row `(org_id, row_id)` under the primary key.
    pub fn seal(&self, org_id: OrgId, row_id: Uuid, purpose: &str, plaintext: &str) -> Result<Vec<u8>> {
        let key = &self.keys[0];
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(org_id, row_id, purpose);
        let ct = key
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext.as_bytes(), aad: &aad })
            .map_err(|_| Error::Crypto("encryption failed"))?;
        let mut out = Vec::with_capacity(2 + key.id.len() + 24 + ct.len());
        out.push(VERSION);
        out.push(key.id.len() as u8);
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a sealed secret of the row `(org_id, row_id)`; fails on any tampering,
    /// on a ciphertext moved from another row, or on an unknown key id.
    pub fn open(&self, org_id: OrgId, row_id: Uuid, purpose: &str, sealed: &[u8]) -> Result<Secret> {
        let malformed = Error::Crypto("sealed secret is malformed");
        let (&version, rest) = sealed.split_first().ok_or(Error::Crypto("sealed secret is empty"))?;
        if version != VERSION {
            return Err(Error::Crypto("unknown sealed secret version"));
        }
        let (&id_len, rest) = rest.split_first().ok_or(Error::Crypto("sealed secret is malformed"))?;
        if rest.len() < id_len as usize + 24 {
            return Err(malformed);
        }
        let (id, rest) = rest.split_at(id_len as usize);
        let (nonce, ct) = rest.split_at(24);
        let key = self
            .keys
            .iter()
            .find(|k| k.id.as_bytes() == id)
            .ok_or(Error::Crypto("secret sealed under a master key that is not configured"))?;
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| Error::Crypto("sealed secret is malformed"))?;
        let aad = associated_data(org_id, row_id, purpose);
        let pt = key
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| Error::Crypto("secret failed authentication"))?;
        String::from_utf8(pt).map(Secret::new).map_err(|_| Error::Crypto("secret is not UTF-8"))
    }
}

/// An org's data key, unwrapped in memory for one operation.
#[derive(Clone)]
pub struct DataKey {
    pub id: Uuid,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Sealed-under-a-data-key format version: `2 | dek id (16) | nonce (24) | ciphertext+tag`.
const DEK_VERSION: u8 = 2;
const WRAP_PURPOSE: &str = "org.data_key";

impl DataKey {
    /// A fresh random data key and its bytes wrapped under the ring's primary master key.
    pub fn generate(ring: &KeyRing, org_id: OrgId) -> Result<(DataKey, String, Vec<u8>)> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let id = Uuid::now_v7();
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let wrapped = ring.seal(org_id, id, WRAP_PURPOSE, &encoded)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| Error::Crypto("data key must be 32 bytes"))?;
        Ok((DataKey { id, cipher }, ring.primary_id().to_owned(), wrapped))
    }

    /// Unwraps a stored data key with whichever configured master key wrapped it.
    pub fn unwrap(ring: &KeyRing, org_id: OrgId, id: Uuid, wrapped: &[u8]) -> Result<DataKey> {
        let encoded = ring.open(org_id, id, WRAP_PURPOSE, wrapped)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.expose_secret())
            .map_err(|_| Error::Crypto("data key is malformed"))?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| Error::Crypto("data key must be 32 bytes"))?;
        Ok(DataKey { id, cipher })
    }

    /// Re-wraps this key's material under the ring's primary master key (master rotation).
    pub fn rewrap(ring: &KeyRing, org_id: OrgId, id: Uuid, wrapped: &[u8]) -> Result<Vec<u8>> {
        let encoded = ring.open(org_id, id, WRAP_PURPOSE, wrapped)?;
        ring.seal(org_id, id, WRAP_PURPOSE, encoded.expose_secret())
    }

    /// Seals a secret of row `(org_id, row_id)` under this data key.
    pub fn seal(&self, org_id: OrgId, row_id: Uuid, purpose: &str, plaintext: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(org_id, row_id, purpose);
        let ct = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext.as_bytes(), aad: &aad })
            .map_err(|_| Error::Crypto("encryption failed"))?;
        let mut out = Vec::with_capacity(1 + 16 + 24 + ct.len());
        out.push(DEK_VERSION);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a secret sealed by [`DataKey::seal`] for the same row and purpose.
    pub fn open(&self, org_id: OrgId, row_id: Uuid, purpose: &str, sealed: &[u8]) -> Result<Secret> {
        if sealed_data_key_id(sealed)? != self.id {
            return Err(Error::Crypto("secret sealed under another data key"));
        }
        let (nonce, ct) = sealed[17..].split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| Error::Crypto("sealed secret is malformed"))?;
        let aad = associated_data(org_id, row_id, purpose);
        let pt = self
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| Error::Crypto("secret failed authentication"))?;
        String::from_utf8(pt).map(Secret::new).map_err(|_| Error::Crypto("secret is not UTF-8"))
    }
}

/// The data key id a sealed secret names.
pub fn sealed_data_key_id(sealed: &[u8]) -> Result<Uuid> {
    if sealed.len() < 1 + 16 + 24 + 16 || sealed[0] != DEK_VERSION {
        return Err(Error::Crypto("sealed secret is malformed"));
    }
    Uuid::from_slice(&sealed[1..17]).map_err(|_| Error::Crypto("sealed secret is malformed"))
}

fn associated_data(org_id: OrgId, row_id: Uuid, purpose: &str) -> Vec<u8> {
    format!("turnstone:v1:{}:{row_id}:{purpose}", org_id.uuid()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TypedId;

    #[test]
    fn round_trip_tamper_wrong_row_and_rotation() {
        let k1 = KeyRing::generate_spec("k1");
        let old = KeyRing::parse(&k1).unwrap();
        let (org, row) = (OrgId::new(), Uuid::now_v7());
        let sealed = old.seal(org, row, "provider.api_key", "sk-secret").unwrap();
        assert_eq!(old.open(org, row, "provider.api_key", &sealed).unwrap().expose_secret(), "sk-secret");

        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(old.open(org, row, "provider.api_key", &tampered).is_err());
        assert!(old.open(OrgId::new(), row, "provider.api_key", &sealed).is_err());
        assert!(old.open(org, Uuid::now_v7(), "provider.api_key", &sealed).is_err());
        assert!(old.open(org, row, "mcp.token", &sealed).is_err());

        // Rotation: the new key seals, the old one still opens what it sealed.
        let k2 = KeyRing::generate_spec("k2");
        let rotated = KeyRing::parse(&format!("{k2},{k1}")).unwrap();
        assert_eq!(rotated.primary_id(), "k2");
        assert_eq!(rotated.open(org, row, "provider.api_key", &sealed).unwrap().expose_secret(), "sk-secret");
        let resealed = rotated.seal(org, row, "provider.api_key", "sk-secret").unwrap();
        assert!(old.open(org, row, "provider.api_key", &resealed).is_err(), "old ring lacks k2");
        assert!(KeyRing::parse(&format!("{k2},k1:")).is_err(), "empty key material is rejected");
    }

    #[test]
    fn data_keys_bind_to_org_row_and_survive_master_rotation() {
        let k1 = KeyRing::generate_spec("k1");
        let ring = KeyRing::parse(&k1).unwrap();
        let (org, other_org, row) = (OrgId::new(), OrgId::new(), Uuid::now_v7());
        let (dek, master_id, wrapped) = DataKey::generate(&ring, org).unwrap();
        assert_eq!(master_id, "k1");
        let sealed = dek.seal(org, row, "provider.api_key", "sk-1").unwrap();
        assert_eq!(sealed_data_key_id(&sealed).unwrap(), dek.id);
        assert_eq!(dek.open(org, row, "provider.api_key", &sealed).unwrap().expose_secret(), "sk-1");
        assert!(dek.open(other_org, row, "provider.api_key", &sealed).is_err(), "wrong org");
        assert!(dek.open(org, Uuid::now_v7(), "provider.api_key", &sealed).is_err(), "wrong row");
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        assert!(dek.open(org, row, "provider.api_key", &tampered).is_err(), "tampered");
        // The wrapped key is bound to its org too.
        assert!(DataKey::unwrap(&ring, other_org, dek.id, &wrapped).is_err());
        // Master rotation: re-wrap under k2 while k1 is still configured, then drop k1.
        let k2 = KeyRing::generate_spec("k2");
        let both = KeyRing::parse(&format!("{k2},{k1}")).unwrap();
        let rewrapped = DataKey::rewrap(&both, org, dek.id, &wrapped).unwrap();
        let only_new = KeyRing::parse(&k2).unwrap();
        let again = DataKey::unwrap(&only_new, org, dek.id, &rewrapped).unwrap();
        assert_eq!(again.open(org, row, "provider.api_key", &sealed).unwrap().expose_secret(), "sk-1");
        assert!(DataKey::unwrap(&only_new, org, dek.id, &wrapped).is_err(), "the old wrapping needs k1");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        let ring = KeyRing::parse(&KeyRing::generate_spec("k1")).unwrap();
        assert!(!format!("{ring:?}").contains('='));
    }
}
