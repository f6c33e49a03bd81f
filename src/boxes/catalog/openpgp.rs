//! OpenPGP detached signatures over remote catalogs, as apt and OBS users know them: the
//! catalog at URL is signed by URL.asc (armored) or URL.sig (binary), made with
//! `gpg --detach-sign [--armor]`, and checked against a keyring exported with `gpg --export`
//! (binary or armored, several keys allowed). RFC 9580; parsed and verified by the `pgp`
//! crate.

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};

/// The suffixes tried for a catalog's signature, in order.
pub const SUFFIXES: [&str; 2] = [".asc", ".sig"];

/// The keys of a keyring file. Errors: unreadable, or no public key in it.
pub fn load_keyring(path: &std::path::Path) -> Result<Vec<SignedPublicKey>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (keys, _) = SignedPublicKey::from_reader_many(file)
        .map_err(|e| format!("{}: not an OpenPGP keyring: {e}", path.display()))?;
    let keys: Vec<SignedPublicKey> = keys.filter_map(|k| k.ok()).collect();
    if keys.is_empty() {
        return Err(format!(
            "{}: holds no OpenPGP public key (export one with 'gpg --export KEYID > {}')",
            path.display(),
            path.display()
        ));
    }
    Ok(keys)
}

/// Whether `signature` (armored or binary) is a valid signature over `data` by a key or
/// subkey of `keyring`. Errors say why not, in words for the user.
pub fn verify(keyring: &[SignedPublicKey], data: &[u8], signature: &[u8]) -> Result<(), String> {
    let (signature, _) = DetachedSignature::from_reader_single(signature)
        .map_err(|e| format!("the signature is not an OpenPGP signature ({e})"))?;
    for key in keyring {
        if signature.verify(&key.primary_key, data).is_ok() {
            return Ok(());
        }
        if key
            .public_subkeys
            .iter()
            .any(|sub| signature.verify(&sub.key, data).is_ok())
        {
            return Ok(());
        }
    }
    Err("the signature does not verify with any key of the keyring (another key, or the catalog changed after signing)".into())
}
