//! Signatures as cosign makes them (sigstore/cosign, `specs/SIGNATURE_SPEC.md`), so
//! `cosign verify --key KEY.pub` reads what boxbuild writes and the reverse: a "simple
//! signing" payload naming the signed manifest digest, an ECDSA P-256 / SHA-256 signature
//! over the payload bytes (ASN.1 DER, base64 in the layer annotation), stored as an image
//! manifest in the same repository under the tag `sha256-HEX.sig`.
//!
//! Keys are PEM files: a PKCS#8 private key (`openssl genpkey -algorithm EC -pkeyopt
//! ec_paramgen_curve:P-256`) to sign, its SubjectPublicKeyInfo (`openssl pkey -pubout`, the
//! form `cosign.pub` has) to verify.

use base64::Engine;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The layer media type of a signature payload.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The tag the signatures of `digest` (`sha256:HEX`) live under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Payload {
    pub critical: Critical,
    pub optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The payload for `digest` of `repository` (REGISTRY/REPOSITORY, no tag).
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    let payload = Payload {
        critical: Critical {
            identity: Identity {
                docker_reference: repository.to_string(),
            },
            image: Image {
                docker_manifest_digest: digest.to_string(),
            },
            kind: SIGNATURE_TYPE.to_string(),
        },
        optional: None,
    };
    // Cannot fail: derived Serialize of strings.
    serde_json::to_vec(&payload).expect("serialisable")
}

/// A private key for signing, read from a PKCS#8 PEM file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        format!(
            "{}: not an unencrypted PKCS#8 P-256 private key ({e}); make one with 'openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out KEY'",
            path.display()
        )
    })
}

/// A public key for verifying, read from a PEM file (`-----BEGIN PUBLIC KEY-----`).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| {
        format!(
            "{}: not a P-256 public key in PEM ({e}); export one with 'openssl pkey -in KEY -pubout'",
            path.display()
        )
    })
}

/// Signs `payload`; returns the base64 DER signature as the annotation carries it.
pub fn sign(key: &SigningKey, payload: &[u8]) -> String {
    let signature: DerSignature = key.sign(payload);
    base64::engine::general_purpose::STANDARD.encode(signature.as_bytes())
}

/// Why a signature layer does not vouch for `digest`.
#[derive(Debug, PartialEq)]
pub enum Rejection {
    /// The signature does not verify with the key.
    BadSignature,
    /// The payload signs another manifest (or is not a simple-signing payload).
    OtherDigest(String),
    /// The payload was signed for another repository (its `docker-reference`).
    OtherIdentity(String),
}

/// Checks one signature layer: `signature_b64` verifies over the payload with `key`, and
/// the payload names `digest` and, as its `docker-reference`, the repository `identity`
/// (`REGISTRY/REPOSITORY`; a tag or digest after it is ignored, as cosign signs
/// repositories). DER and fixed-size (r||s) encodings are both accepted.
pub fn verify(
    key: &VerifyingKey,
    payload: &[u8],
    signature_b64: &str,
    digest: &str,
    identity: &str,
) -> Result<(), Rejection> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| Rejection::BadSignature)?;
    let signature = Signature::from_der(&bytes)
        .or_else(|_| Signature::from_slice(&bytes))
        .map_err(|_| Rejection::BadSignature)?;
    key.verify(payload, &signature)
        .map_err(|_| Rejection::BadSignature)?;
    let parsed: Payload = serde_json::from_slice(payload)
        .map_err(|_| Rejection::OtherDigest("a payload that is not simple signing".into()))?;
    if parsed.critical.image.docker_manifest_digest != digest {
        return Err(Rejection::OtherDigest(
            parsed.critical.image.docker_manifest_digest,
        ));
    }
    let signed = crate::boxes::trust::repository_of(&parsed.critical.identity.docker_reference);
    if signed != identity {
        return Err(Rejection::OtherIdentity(signed.to_string()));
    }
    Ok(())
}

/// The cosign config blob of a signature manifest: an image config whose layers are the
/// payloads (as cosign writes it).
pub fn config_blob(payload_digests: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": payload_digests},
    }))
    .expect("serialisable")
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    fn key() -> SigningKey {
        // A fixed scalar: tests need no randomness.
        SigningKey::from_slice(&[7u8; 32]).unwrap()
    }

    #[test]
    fn signs_and_verifies_the_named_digest_only() {
        let key = key();
        let digest = format!("sha256:{}", "a".repeat(64));
        let payload = payload("127.0.0.1:5000/boxes/tiny", &digest);
        let sig = sign(&key, &payload);
        let public = key.verifying_key();
        let repo = "127.0.0.1:5000/boxes/tiny";
        assert_eq!(verify(public, &payload, &sig, &digest, repo), Ok(()));
        assert_eq!(
            verify(
                public,
                &payload,
                &sig,
                &digest,
                "127.0.0.1:5000/copies/tiny"
            ),
            Err(Rejection::OtherIdentity(repo.to_string()))
        );
        let other = format!("sha256:{}", "b".repeat(64));
        assert!(matches!(
            verify(public, &payload, &sig, &other, repo),
            Err(Rejection::OtherDigest(_))
        ));
        let mut tampered = payload.clone();
        tampered[10] ^= 1;
        assert_eq!(
            verify(public, &tampered, &sig, &digest, repo),
            Err(Rejection::BadSignature)
        );
        let stranger = SigningKey::from_slice(&[9u8; 32]).unwrap();
        assert_eq!(
            verify(stranger.verifying_key(), &payload, &sig, &digest, repo),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            signature_tag(&digest),
            format!("sha256-{}.sig", "a".repeat(64))
        );
    }

    #[test]
    fn keys_load_from_pem() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("k.pem");
        let public = dir.path().join("k.pub");
        std::fs::write(
            &private,
            key().to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        std::fs::write(
            &public,
            key()
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        assert!(load_signing_key(&private).is_ok());
        assert!(load_verifying_key(&public).is_ok());
        let e = load_verifying_key(&private).unwrap_err();
        assert!(e.contains("openssl pkey"), "{e}");
    }
}
