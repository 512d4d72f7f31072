//! Publisher keys: who vouches for a dataset or a name.
//!
//! Two algorithms: ECDSA P-256 (the default, because OpenSSF Model Signing's key-based
//! signing verifies it offline, so one key serves both worlds) and Ed25519 (smaller and
//! faster, for native records). Keys are never a node's libp2p identity: a publisher may
//! run many nodes, and a node may carry data for many publishers.
//!
//! Forms: secret keys are PKCS#8 PEM files (what `openssl` and the `model_signing` CLI
//! read); public keys are SubjectPublicKeyInfo PEM files, or one line of text
//! ([`PublicKey`]'s `Display`): `p256:<hex of the 33-byte compressed point>` or
//! `ed25519:<hex of the 32-byte key>`.

use std::{fmt, str::FromStr};

use ed25519_dalek::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};

use crate::Hash;

/// Longest key text or PEM accepted, in bytes: a P-256 PKCS#8 PEM is ~240 bytes.
pub const MAX_KEY_TEXT: usize = 4096;

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a key in any accepted form.
    #[error("not a publisher key: {0}")]
    Malformed(String),
    /// The signature does not verify with this key.
    #[error("the signature does not verify with key {0}")]
    BadSignature(String),
}

/// The signature schemes a publisher key can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// ECDSA over NIST P-256 with SHA-256 (OpenSSF Model Signing's key signing).
    P256,
    /// Ed25519 (RFC 8032).
    Ed25519,
}

impl KeyAlgorithm {
    /// The prefix of the key's text form.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::P256 => "p256",
            Self::Ed25519 => "ed25519",
        }
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "p256" | "ecdsa-p256" | "P-256" => Ok(Self::P256),
            "ed25519" => Ok(Self::Ed25519),
            _ => Err(KeyError::Malformed(format!(
                "unknown key algorithm {s:?}: use p256 or ed25519"
            ))),
        }
    }
}

/// A publisher's public key.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// ECDSA P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKey {
    /// The algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::P256(_) => KeyAlgorithm::P256,
            Self::Ed25519(_) => KeyAlgorithm::Ed25519,
        }
    }

    /// The key's canonical bytes: a compressed SEC1 point (33 bytes) or the Ed25519 key
    /// (32 bytes). With the algorithm, this is what records carry and DHT keys derive from.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::P256(k) => k.to_sec1_point(true).as_bytes().to_vec(),
            Self::Ed25519(k) => k.to_bytes().to_vec(),
        }
    }

    /// Reads a key from its algorithm and [`Self::to_bytes`].
    pub fn from_bytes(algorithm: KeyAlgorithm, bytes: &[u8]) -> Result<Self, KeyError> {
        match algorithm {
            KeyAlgorithm::P256 => {
                if bytes.len() != 33 {
                    return Err(KeyError::Malformed(format!(
                        "a P-256 key is a 33-byte compressed point, not {} bytes",
                        bytes.len()
                    )));
                }
                p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                    .map(Self::P256)
                    .map_err(|_| KeyError::Malformed("not a point on P-256".into()))
            }
            KeyAlgorithm::Ed25519 => {
                let bytes: &[u8; 32] = bytes.try_into().map_err(|_| {
                    KeyError::Malformed(format!("an Ed25519 key is 32 bytes, not {}", bytes.len()))
                })?;
                ed25519_dalek::VerifyingKey::from_bytes(bytes)
                    .map(Self::Ed25519)
                    .map_err(|_| KeyError::Malformed("not an Ed25519 point".into()))
            }
        }
    }

    /// Reads a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`) or the one-line text.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if text.len() > MAX_KEY_TEXT {
            return Err(KeyError::Malformed(format!(
                "{} bytes is longer than any key ({MAX_KEY_TEXT})",
                text.len()
            )));
        }
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return Self::from_pem(text);
        }
        let (algorithm, hex) = text.split_once(':').ok_or_else(|| {
            KeyError::Malformed("expected p256:<hex>, ed25519:<hex> or a PEM public key".into())
        })?;
        let algorithm: KeyAlgorithm = algorithm.parse()?;
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(hex.as_bytes())
            .map_err(|_| KeyError::Malformed(format!("{hex:?} is not hexadecimal")))?;
        Self::from_bytes(algorithm, &bytes)
    }

    fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if let Ok(k) =
            <p256::ecdsa::VerifyingKey as p256::pkcs8::DecodePublicKey>::from_public_key_pem(pem)
        {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::Ed25519(k));
        }
        Err(KeyError::Malformed(
            "a PEM public key that is neither P-256 nor Ed25519".into(),
        ))
    }

    /// The SubjectPublicKeyInfo PEM, as `openssl` and `model_signing` read it.
    pub fn to_pem(&self) -> String {
        let pem = match self {
            Self::P256(k) => {
                p256::pkcs8::EncodePublicKey::to_public_key_pem(k, p256::pkcs8::LineEnding::LF)
            }
            Self::Ed25519(k) => {
                k.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            }
        };
        pem.unwrap_or_default()
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let der = match self {
            Self::P256(k) => p256::pkcs8::EncodePublicKey::to_public_key_der(k),
            Self::Ed25519(k) => k.to_public_key_der(),
        };
        der.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// A short, stable label: the first 8 bytes of the BLAKE3 hash of the text form.
    pub fn fingerprint(&self) -> String {
        Hash::of(self.to_string().as_bytes()).to_string()[..16].to_string()
    }

    /// Checks a signature in this key's native form ([`SecretKey::sign`]). A P-256
    /// signature must have the low `s` (its twin `(r, n − s)` also verifies in ECDSA; one
    /// accepted form makes a signed record's bytes, and so its id, unique).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let ok = match self {
            Self::P256(k) => p256::ecdsa::Signature::from_slice(signature)
                .ok()
                .filter(|s| s.normalize_s() == *s)
                .is_some_and(|s| k.verify(message, &s).is_ok()),
            Self::Ed25519(k) => ed25519_dalek::Signature::from_slice(signature)
                .ok()
                .is_some_and(|s| k.verify_strict(message, &s).is_ok()),
        };
        ok.then_some(())
            .ok_or_else(|| KeyError::BadSignature(self.fingerprint()))
    }

    /// Checks a signature as OpenSSF Model Signing writes it: DER for P-256 (what
    /// `cryptography` produces), the 64 raw bytes for Ed25519.
    pub fn verify_dsse(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        match self {
            Self::P256(k) => p256::ecdsa::DerSignature::from_bytes(signature)
                .ok()
                .and_then(|s| k.verify(message, &s).ok())
                .ok_or_else(|| KeyError::BadSignature(self.fingerprint())),
            Self::Ed25519(_) => self.verify(message, signature),
        }
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.algorithm().prefix(),
            data_encoding::HEXLOWER.encode(&self.to_bytes())
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::parse(s)
    }
}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.to_bytes().hash(state);
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A publisher's secret key. Its `Debug` never shows the key.
#[derive(Clone)]
pub enum SecretKey {
    /// ECDSA P-256.
    P256(p256::ecdsa::SigningKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
}

impl SecretKey {
    /// A key from 32 bytes of the caller's randomness (sans-IO: the caller owns the RNG).
    /// For P-256, `None` when the bytes are not a valid scalar (chance ~2⁻³²): draw again.
    pub fn from_seed(algorithm: KeyAlgorithm, seed: &[u8; 32]) -> Option<Self> {
        match algorithm {
            KeyAlgorithm::P256 => p256::ecdsa::SigningKey::from_slice(seed)
                .ok()
                .map(Self::P256),
            KeyAlgorithm::Ed25519 => {
                Some(Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed)))
            }
        }
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), P-256 or Ed25519;
    /// also the SEC1 form `openssl ecparam -genkey` writes (`-----BEGIN EC PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if pem.len() > MAX_KEY_TEXT {
            return Err(KeyError::Malformed("longer than any private key".into()));
        }
        let pem = pem.trim();
        if let Ok(k) =
            <p256::ecdsa::SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_pem(pem)
        {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self::Ed25519(k));
        }
        if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
            return Ok(Self::P256(k.into()));
        }
        Err(KeyError::Malformed(
            "not a PEM private key for P-256 or Ed25519 (PKCS#8 or SEC1)".into(),
        ))
    }

    /// The PKCS#8 PEM, to be written to a file only its owner can read.
    pub fn to_pem(&self) -> zeroize::Zeroizing<String> {
        let pem = match self {
            Self::P256(k) => {
                p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(k, p256::pkcs8::LineEnding::LF)
            }
            Self::Ed25519(k) => {
                k.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            }
        };
        pem.unwrap_or_default()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        match self {
            Self::P256(k) => PublicKey::P256(*k.verifying_key()),
            Self::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
        }
    }

    /// Signs `message` in the native form: 64 bytes (P-256 `r‖s`, deterministic per RFC
    /// 6979; or Ed25519).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(message);
                s.normalize_s().to_bytes().to_vec()
            }
            Self::Ed25519(k) => ed25519_dalek::Signer::sign(k, message).to_bytes().to_vec(),
        }
    }

    /// Signs `message` as OpenSSF Model Signing does: DER for P-256.
    pub fn sign_dsse(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let s: p256::ecdsa::DerSignature = k.sign(message);
                s.as_bytes().to_vec()
            }
            Self::Ed25519(_) => self.sign(message),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(algorithm: KeyAlgorithm, n: u8) -> SecretKey {
        SecretKey::from_seed(algorithm, &[n; 32]).expect("valid seed")
    }

    #[test]
    fn keys_round_trip_through_text_and_pem() {
        for algorithm in [KeyAlgorithm::P256, KeyAlgorithm::Ed25519] {
            let secret = key(algorithm, 7);
            let public = secret.public();
            assert_eq!(PublicKey::parse(&public.to_string()), Ok(public.clone()));
            assert_eq!(PublicKey::parse(&public.to_pem()), Ok(public.clone()));
            let again = SecretKey::from_pem(&secret.to_pem()).expect("pem");
            assert_eq!(again.public(), public);
            assert!(!format!("{secret:?}").contains(&*secret.to_pem()));
        }
    }

    #[test]
    fn signatures_verify_only_with_their_key_and_message() {
        for algorithm in [KeyAlgorithm::P256, KeyAlgorithm::Ed25519] {
            let (a, b) = (key(algorithm, 1), key(algorithm, 2));
            let sig = a.sign(b"message");
            assert_eq!(sig.len(), 64);
            if algorithm == KeyAlgorithm::P256 {
                // The twin with the high s verifies in plain ECDSA, but is refused here.
                let s = p256::ecdsa::Signature::from_slice(&sig).expect("sig");
                let (r, low) = s.split_scalars();
                let high = p256::ecdsa::Signature::from_scalars(r, -low).expect("twin");
                assert!(a.public().verify(b"message", &high.to_bytes()).is_err());
            }
            assert!(a.public().verify(b"message", &sig).is_ok());
            assert!(a.public().verify(b"messagE", &sig).is_err());
            assert!(b.public().verify(b"message", &sig).is_err());
            let dsse = a.sign_dsse(b"payload");
            assert!(a.public().verify_dsse(b"payload", &dsse).is_ok());
            let mut flipped = dsse.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert!(a.public().verify_dsse(b"payload", &flipped).is_err());
        }
    }

    #[test]
    fn malformed_keys_are_clear_errors() {
        for bad in [
            "",
            "p256:",
            "p256:zz",
            "p256:00",
            &format!("p256:{}", "00".repeat(33)),
            "ed25519:1234",
            "rsa:00",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            &"x".repeat(MAX_KEY_TEXT + 1),
        ] {
            assert!(PublicKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            SecretKey::from_pem("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----").is_err()
        );
    }
}
