//! ID token signatures: a compact JWS checked against the provider's JWKS.
//! Knows base64url, key sets and signature algorithms; not claims, HTTP or users.
//!
//! The token's header only *selects* a key from the set the provider published;
//! keys embedded in the token (`jwk`, `jku`, `x5c`, `x5u`) are never used, and
//! the algorithm must be one of the asymmetric ones named in [`Algorithm`], so a
//! token cannot choose `none` or an HMAC keyed with a public key (alg confusion).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

/// Keys kept from one JWKS document; providers publish a handful (current,
/// next and previous), so more than this is a misconfiguration or an attack.
pub const MAX_KEYS: usize = 100;
/// The largest JWKS document read; a hundred 8192-bit RSA keys fit easily.
pub const MAX_KEY_SET_LEN: usize = 1024 * 1024;
/// The largest ID token accepted. Real ones are a few KiB, more with long group
/// lists (Entra ID switches to an overage claim past 200 groups).
pub const MAX_TOKEN_LEN: usize = 256 * 1024;
/// The largest encoded header accepted; real ones are under 300 bytes.
pub const MAX_HEADER_LEN: usize = 8 * 1024;

/// Why an ID token's signature was not accepted, or a key set not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token is not a compact JWS (three base64url parts with a JSON header).
    #[error("the ID token is not a well-formed signed token: {0}")]
    Malformed(String),
    /// The token names an algorithm that is refused (`none`, `HS256`, …).
    #[error(
        "the ID token is signed with {0:?}, which is not accepted \
         (accepted: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
    )]
    UnsupportedAlgorithm(String),
    /// The key set has no key this token could be checked with: none with the
    /// token's `kid`, or (without a `kid`) none for its algorithm. The provider
    /// may have rotated its keys: fetch the JWKS again, once, and retry.
    #[error(
        "the provider's keys include none that can check this ID token{}",
        .0.as_ref().map(|kid| format!(" (key id {kid:?})")).unwrap_or_default()
    )]
    UnknownKey(Option<String>),
    /// No candidate key verifies the signature.
    #[error("the ID token's signature does not match the provider's keys")]
    BadSignature,
    /// The JWKS document cannot be read, or holds no key usable for signatures.
    #[error("the provider's key set (JWKS) is unusable: {0}")]
    InvalidKeySet(String),
}

/// The signature algorithms accepted, by their JWS names (RFC 7518, RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    /// EdDSA with Ed25519 keys only (the only curve ring verifies).
    EdDSA,
}

impl Algorithm {
    /// The algorithm a JWS `alg` value names, or `None` for every one refused.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Some(match name {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            _ => return None,
        })
    }

    /// The JWS `alg` value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    fn rsa_parameters(self) -> Option<&'static RsaParameters> {
        Some(match self {
            Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => return None,
        })
    }
}

/// The curves of the elliptic-curve keys kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The length in bytes of one coordinate (RFC 7518 §6.2.1.2: always full).
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// A public key's material, checked for shape when the set was read.
#[derive(Clone, PartialEq, Eq)]
enum Material {
    /// Modulus and exponent, big-endian without leading zeros (as ring wants).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point 0x04 ‖ x ‖ y.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519([u8; 32]),
}

impl Material {
    fn fits(&self, alg: Algorithm) -> bool {
        match self {
            Material::Rsa { .. } => alg.rsa_parameters().is_some(),
            Material::Ec { curve, .. } => matches!(
                (curve, alg),
                (Curve::P256, Algorithm::ES256) | (Curve::P384, Algorithm::ES384)
            ),
            Material::Ed25519(_) => alg == Algorithm::EdDSA,
        }
    }

    fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Material::Rsa { n, e } => alg.rsa_parameters().is_some_and(|params| {
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }),
            Material::Ec { curve, point } => {
                let algorithm = match curve {
                    Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                };
                UnparsedPublicKey::new(algorithm, point)
                    .verify(message, sig)
                    .is_ok()
            }
            Material::Ed25519(key) => UnparsedPublicKey::new(&signature::ED25519, key)
                .verify(message, sig)
                .is_ok(),
        }
    }
}

/// One signature key from the provider's JWKS.
#[derive(Clone, PartialEq, Eq)]
pub struct Jwk {
    kid: Option<String>,
    alg: Option<Algorithm>,
    material: Material,
}

impl Jwk {
    /// The key's id (`kid`), which tokens name in their header.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm the key may be used with, when the JWKS says (`alg`).
    pub fn alg(&self) -> Option<Algorithm> {
        self.alg
    }

    /// The key type for logs: `RSA`, `EC P-256`, `EC P-384` or `OKP Ed25519`.
    pub fn key_type(&self) -> &'static str {
        match &self.material {
            Material::Rsa { .. } => "RSA",
            Material::Ec {
                curve: Curve::P256, ..
            } => "EC P-256",
            Material::Ec {
                curve: Curve::P384, ..
            } => "EC P-384",
            Material::Ed25519(_) => "OKP Ed25519",
        }
    }

    /// Whether a token signed with `alg` may be checked with this key.
    fn fits(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|own| own == alg) && self.material.fits(alg)
    }

    /// Reads one entry of `keys`; `None` for a key not usable for signatures
    /// (encryption keys, symmetric keys, other curves, bad encodings).
    fn from_json(key: &Value) -> Option<Jwk> {
        let key = key.as_object()?;
        let text = |name: &str| match key.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.as_str())),
            Some(_) => None,
        };
        if text("use")?.is_some_and(|u| u != "sig") {
            return None;
        }
        if let Some(ops) = key.get("key_ops") {
            let ops = ops.as_array()?;
            if !ops.iter().any(|op| op.as_str() == Some("verify")) {
                return None;
            }
        }
        let kid = text("kid")?.map(str::to_owned);
        // A key restricted to an algorithm we refuse can never check a token.
        let alg = match text("alg")? {
            None => None,
            Some(name) => Some(Algorithm::from_name(name)?),
        };
        let bytes = |name: &str| -> Option<Vec<u8>> {
            let encoded = text(name)??;
            URL_SAFE_NO_PAD.decode(encoded).ok()
        };
        let material = match (text("kty")??, text("crv")?) {
            ("RSA", _) => {
                let n = strip_leading_zeros(bytes("n")?);
                let e = strip_leading_zeros(bytes("e")?);
                // ring checks the modulus again (2048..=8192 bits) and the exponent.
                if !(256..=1024).contains(&n.len()) || e.is_empty() || e.len() > 8 {
                    return None;
                }
                Material::Rsa { n, e }
            }
            ("EC", Some(crv)) => {
                let curve = match crv {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    _ => return None,
                };
                let (x, y) = (bytes("x")?, bytes("y")?);
                let len = curve.coordinate_len();
                if x.len() != len || y.len() != len {
                    return None;
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Material::Ec { curve, point }
            }
            ("OKP", Some("Ed25519")) => Material::Ed25519(bytes("x")?.try_into().ok()?),
            _ => return None,
        };
        let key = Jwk { kid, alg, material };
        match key.alg {
            Some(alg) if !key.material.fits(alg) => None,
            _ => Some(key),
        }
    }
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("key_type", &self.key_type())
            .finish()
    }
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// The provider's signature keys, from its JWKS document (`jwks_uri`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// Reads a JWKS document (`{"keys":[…]}`), keeping the keys usable for
    /// signatures and skipping the others; an error when none is usable.
    pub fn parse(json: &[u8]) -> Result<KeySet, JwtError> {
        if json.len() > MAX_KEY_SET_LEN {
            return Err(JwtError::InvalidKeySet(format!(
                "the document is {} bytes long; at most {MAX_KEY_SET_LEN} are read",
                json.len()
            )));
        }
        let document: Value = serde_json::from_slice(json)
            .map_err(|e| JwtError::InvalidKeySet(format!("not JSON: {e}")))?;
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err(JwtError::InvalidKeySet(
                "the document has no \"keys\" list".to_owned(),
            ));
        };
        if entries.len() > MAX_KEYS {
            return Err(JwtError::InvalidKeySet(format!(
                "the document lists {} keys; at most {MAX_KEYS} are accepted",
                entries.len()
            )));
        }
        let keys: Vec<Jwk> = entries.iter().filter_map(Jwk::from_json).collect();
        if keys.is_empty() {
            return Err(JwtError::InvalidKeySet(format!(
                "none of its {} keys is a signature key of a supported type \
                 (RSA, EC P-256, EC P-384, OKP Ed25519)",
                entries.len()
            )));
        }
        Ok(KeySet { keys })
    }

    /// The keys kept, in the document's order.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }
}

/// The JOSE header of a token: what selects the key and the algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The `alg` value as written; [`verify`] refuses all but [`Algorithm`]'s.
    pub alg: String,
    pub kid: Option<String>,
}

/// The three parts of a compact JWS, still encoded.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed(format!(
            "it is {} bytes long; at most {MAX_TOKEN_LEN} are accepted",
            token.len()
        )));
    }
    let mut pieces = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(JwtError::Malformed(format!(
            "it has {} dot-separated parts instead of 3",
            token.split('.').count()
        )));
    };
    if header.len() > MAX_HEADER_LEN {
        return Err(JwtError::Malformed(format!(
            "its header is {} bytes long; at most {MAX_HEADER_LEN} are accepted",
            header.len()
        )));
    }
    let signing_input = token
        .get(..header.len() + 1 + payload.len())
        .ok_or_else(|| JwtError::Malformed("it cannot be split".to_owned()))?;
    Ok(Parts {
        header,
        payload,
        signature,
        signing_input,
    })
}

fn decode(part: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| JwtError::Malformed(format!("its {what} is not unpadded base64url ({e})")))
}

fn parse_header(encoded: &str) -> Result<Header, JwtError> {
    let bytes = decode(encoded, "header")?;
    let header: Value = serde_json::from_slice(&bytes)
        .map_err(|e| JwtError::Malformed(format!("its header is not JSON ({e})")))?;
    let Some(header) = header.as_object() else {
        return Err(JwtError::Malformed(
            "its header is not a JSON object".to_owned(),
        ));
    };
    // RFC 7515 §4.1.11: extensions marked critical must be understood, and we
    // understand none (this also refuses RFC 7797's unencoded payloads).
    if header.contains_key("crit") {
        return Err(JwtError::Malformed(
            "its header lists critical extensions (crit), which are not supported".to_owned(),
        ));
    }
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => {
            return Err(JwtError::Malformed(
                "its header has no alg string".to_owned(),
            ));
        }
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => {
            return Err(JwtError::Malformed(
                "its header's kid is not a string".to_owned(),
            ));
        }
    };
    Ok(Header { alg, kid })
}

/// The token's header, decoded but not checked: for logs and diagnostics.
pub fn decode_header(token: &str) -> Result<Header, JwtError> {
    parse_header(split(token)?.header)
}

/// Checks a compact JWS against the provider's keys and returns its payload
/// (the claims' JSON, not yet validated: see `claims`).
///
/// With a `kid`, only the keys with that id are tried; without one, every key
/// that fits the algorithm. A key whose own `alg` is set is used for that
/// algorithm only.
pub fn verify(token: &str, keys: &KeySet) -> Result<Vec<u8>, JwtError> {
    let parts = split(token)?;
    let header = parse_header(parts.header)?;
    let alg =
        Algorithm::from_name(&header.alg).ok_or(JwtError::UnsupportedAlgorithm(header.alg))?;
    let signature = decode(parts.signature, "signature")?;
    let payload = decode(parts.payload, "payload")?;

    let mut candidates = keys
        .keys
        .iter()
        .filter(|key| header.kid.is_none() || key.kid == header.kid)
        .filter(|key| key.fits(alg))
        .peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::UnknownKey(header.kid));
    }
    let message = parts.signing_input.as_bytes();
    if candidates.any(|key| key.material.verify(alg, message, &signature)) {
        Ok(payload)
    } else {
        Err(JwtError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;

    const RSA_PKCS8: &[u8] = include_bytes!("testdata/rsa2048.pk8");

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A signing key of each kind, with its JWK (without `kid` or `alg`).
    enum Signer {
        Rsa(RsaKeyPair),
        Ec(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    impl Signer {
        fn rsa() -> Signer {
            Signer::Rsa(RsaKeyPair::from_pkcs8(RSA_PKCS8).unwrap())
        }

        fn ec(alg: &'static signature::EcdsaSigningAlgorithm) -> Signer {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Signer::Ec(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
        }

        fn es256() -> Signer {
            Signer::ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        }

        fn es384() -> Signer {
            Signer::ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING)
        }

        fn ed25519() -> Signer {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
        }

        fn jwk(&self) -> Value {
            match self {
                Signer::Rsa(key) => {
                    let public: ring::rsa::PublicKeyComponents<Vec<u8>> = key.public().into();
                    json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)})
                }
                Signer::Ec(key) => {
                    let point = key.public_key().as_ref();
                    let len = (point.len() - 1) / 2;
                    let crv = if len == 32 { "P-256" } else { "P-384" };
                    json!({
                        "kty": "EC", "crv": crv,
                        "x": b64(&point[1..=len]), "y": b64(&point[1 + len..]),
                    })
                }
                Signer::Ed(key) => {
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().as_ref())})
                }
            }
        }

        fn jwk_with(&self, kid: Option<&str>, alg: Option<&str>) -> Value {
            let mut jwk = self.jwk();
            if let Some(kid) = kid {
                jwk["kid"] = json!(kid);
            }
            if let Some(alg) = alg {
                jwk["alg"] = json!(alg);
            }
            jwk
        }

        fn sign(&self, alg: &str, message: &[u8]) -> Vec<u8> {
            let rng = SystemRandom::new();
            match self {
                Signer::Rsa(key) => {
                    let padding: &'static dyn signature::RsaEncoding = match alg {
                        "RS256" => &signature::RSA_PKCS1_SHA256,
                        "RS384" => &signature::RSA_PKCS1_SHA384,
                        "RS512" => &signature::RSA_PKCS1_SHA512,
                        "PS256" => &signature::RSA_PSS_SHA256,
                        "PS384" => &signature::RSA_PSS_SHA384,
                        "PS512" => &signature::RSA_PSS_SHA512,
                        _ => panic!("not an RSA algorithm: {alg}"),
                    };
                    let mut sig = vec![0; key.public().modulus_len()];
                    key.sign(padding, &rng, message, &mut sig).unwrap();
                    sig
                }
                Signer::Ec(key) => key.sign(&rng, message).unwrap().as_ref().to_vec(),
                Signer::Ed(key) => key.sign(message).as_ref().to_vec(),
            }
        }

        /// A token over `payload` with header `{"alg", "kid"?}`.
        fn token(&self, alg: &str, kid: Option<&str>, payload: &[u8]) -> String {
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload));
            let sig = self.sign(alg, input.as_bytes());
            format!("{input}.{}", b64(&sig))
        }
    }

    fn set(keys: &[Value]) -> KeySet {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    const PAYLOAD: &[u8] = br#"{"iss":"https://idp.example","sub":"alice"}"#;

    #[test]
    fn every_accepted_algorithm_verifies() {
        let rsa = Signer::rsa();
        let cases = [
            (&rsa, "RS256"),
            (&rsa, "RS384"),
            (&rsa, "RS512"),
            (&rsa, "PS256"),
            (&rsa, "PS384"),
            (&rsa, "PS512"),
            (&Signer::es256(), "ES256"),
            (&Signer::es384(), "ES384"),
            (&Signer::ed25519(), "EdDSA"),
        ];
        for (signer, alg) in cases {
            let keys = set(&[signer.jwk_with(Some("k1"), Some(alg))]);
            let token = signer.token(alg, Some("k1"), PAYLOAD);
            assert_eq!(verify(&token, &keys).as_deref(), Ok(PAYLOAD), "{alg}");
            // Without kid or alg on either side, the key is found by its type.
            let keys = set(&[signer.jwk()]);
            let token = signer.token(alg, None, PAYLOAD);
            assert_eq!(verify(&token, &keys).as_deref(), Ok(PAYLOAD), "{alg}");
        }
    }

    #[test]
    fn a_changed_signature_or_payload_is_refused() {
        for (signer, alg) in [
            (Signer::rsa(), "RS256"),
            (Signer::es256(), "ES256"),
            (Signer::ed25519(), "EdDSA"),
        ] {
            let keys = set(&[signer.jwk()]);
            let token = signer.token(alg, None, PAYLOAD);
            let (input, sig) = token.rsplit_once('.').unwrap();
            let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
            sig[5] ^= 0x01;
            let flipped = format!("{input}.{}", b64(&sig));
            assert_eq!(
                verify(&flipped, &keys),
                Err(JwtError::BadSignature),
                "{alg}"
            );

            let mut parts: Vec<&str> = token.split('.').collect();
            let changed = b64(br#"{"iss":"https://idp.example","sub":"admin"}"#);
            parts[1] = &changed;
            assert_eq!(
                verify(&parts.join("."), &keys),
                Err(JwtError::BadSignature),
                "{alg}"
            );
            // A signature of the wrong length is a bad signature too, not a panic.
            let short = format!("{input}.{}", b64(&sig[..10]));
            assert_eq!(verify(&short, &keys), Err(JwtError::BadSignature), "{alg}");
        }
    }

    #[test]
    fn none_and_hmac_are_refused_by_name() {
        let signer = Signer::rsa();
        let keys = set(&[signer.jwk_with(Some("k1"), None)]);
        let header = b64(br#"{"alg":"none","kid":"k1"}"#);
        let token = format!("{header}.{}.", b64(PAYLOAD));
        assert_eq!(
            verify(&token, &keys),
            Err(JwtError::UnsupportedAlgorithm("none".to_owned()))
        );

        // HS256 keyed with the public key's bytes: the classic alg confusion.
        let jwk = signer.jwk();
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        for secret in [n, jwk.to_string().into_bytes()] {
            for alg in ["HS256", "HS384", "HS512"] {
                let header = b64(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#).as_bytes());
                let input = format!("{header}.{}", b64(PAYLOAD));
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
                let tag = ring::hmac::sign(&key, input.as_bytes());
                let token = format!("{input}.{}", b64(tag.as_ref()));
                assert_eq!(
                    verify(&token, &keys),
                    Err(JwtError::UnsupportedAlgorithm(alg.to_owned()))
                );
            }
        }
        for alg in ["RS1", "ES512", "ES256K", "Ed25519", "rs256", ""] {
            let header = b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes());
            let token = format!("{header}.{}.AAAA", b64(PAYLOAD));
            assert_eq!(
                verify(&token, &keys),
                Err(JwtError::UnsupportedAlgorithm(alg.to_owned()))
            );
        }
    }

    #[test]
    fn keys_are_chosen_by_kid_and_by_alg() {
        let rsa = Signer::rsa();
        let ec = Signer::es256();
        let ed = Signer::ed25519();
        let keys = set(&[
            ec.jwk_with(Some("ec"), None),
            ed.jwk_with(Some("ed"), None),
            rsa.jwk_with(Some("rsa"), Some("RS256")),
        ]);
        assert_eq!(keys.keys().len(), 3);

        // An unknown kid: the caller refetches the JWKS.
        let token = rsa.token("RS256", Some("rotated"), PAYLOAD);
        assert_eq!(
            verify(&token, &keys),
            Err(JwtError::UnknownKey(Some("rotated".to_owned())))
        );
        // A kid naming a key of another type is no key for this token.
        let token = rsa.token("RS256", Some("ec"), PAYLOAD);
        assert_eq!(
            verify(&token, &keys),
            Err(JwtError::UnknownKey(Some("ec".to_owned())))
        );
        // The RSA key is for RS256 only, so a PS256 token finds no key.
        let token = rsa.token("PS256", Some("rsa"), PAYLOAD);
        assert_eq!(
            verify(&token, &keys),
            Err(JwtError::UnknownKey(Some("rsa".to_owned())))
        );
        let token = rsa.token("PS256", None, PAYLOAD);
        assert_eq!(verify(&token, &keys), Err(JwtError::UnknownKey(None)));
        // No kid: every key that fits is tried.
        let token = rsa.token("RS256", None, PAYLOAD);
        assert_eq!(verify(&token, &keys).as_deref(), Ok(PAYLOAD));
        let token = ed.token("EdDSA", None, PAYLOAD);
        assert_eq!(verify(&token, &keys).as_deref(), Ok(PAYLOAD));

        // Several keys of one type without kids: each is tried.
        let other = Signer::es256();
        let keys = set(&[other.jwk(), ec.jwk(), rsa.jwk()]);
        let token = ec.token("ES256", None, PAYLOAD);
        assert_eq!(verify(&token, &keys).as_deref(), Ok(PAYLOAD));
        // A kid the token names but the keys do not carry is unknown.
        let token = ec.token("ES256", Some("ec"), PAYLOAD);
        assert_eq!(
            verify(&token, &keys),
            Err(JwtError::UnknownKey(Some("ec".to_owned())))
        );
        // Signed by a key not in the set: the keys that fit do not match.
        let stranger = Signer::es256();
        let token = stranger.token("ES256", None, PAYLOAD);
        assert_eq!(verify(&token, &keys), Err(JwtError::BadSignature));
    }

    #[test]
    fn key_sets_keep_only_signature_keys() {
        let rsa = Signer::rsa().jwk();
        let ec = Signer::es256().jwk();
        let mut enc = rsa.clone();
        enc["use"] = json!("enc");
        let mut wrap = ec.clone();
        wrap["key_ops"] = json!(["wrapKey"]);
        let mut verify_op = ec.clone();
        verify_op["key_ops"] = json!(["verify"]);
        verify_op["use"] = json!("sig");
        let mut p521 = ec.clone();
        p521["crv"] = json!("P-521");
        let mut short_x = ec.clone();
        short_x["x"] = json!(b64(&[1; 31]));
        let mut padded = ec.clone();
        padded["x"] = json!(format!("{}=", ec["x"].as_str().unwrap()));
        let mut rsa_oaep = rsa.clone();
        rsa_oaep["alg"] = json!("RSA-OAEP");
        let mut rsa_for_es = rsa.clone();
        rsa_for_es["alg"] = json!("ES256");
        let mut small_rsa = rsa.clone();
        small_rsa["n"] = json!(b64(&[0xc5; 128]));
        let mut zero_padded = rsa.clone();
        let n = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
        zero_padded["n"] = json!(b64(&[&[0u8][..], &n].concat()));
        let keys = set(&[
            json!({"kty": "oct", "k": "c2VjcmV0"}),
            json!({"kty": "OKP", "crv": "X25519", "x": b64(&[9; 32])}),
            json!({"kty": "OKP", "crv": "Ed448", "x": b64(&[9; 57])}),
            json!("not an object"),
            json!({"kty": 7}),
            enc,
            wrap,
            p521,
            short_x,
            padded,
            rsa_oaep,
            rsa_for_es,
            small_rsa,
            verify_op,
            zero_padded,
        ]);
        let kinds: Vec<_> = keys.keys().iter().map(Jwk::key_type).collect();
        assert_eq!(kinds, ["EC P-256", "RSA"]);

        // A leading zero on the modulus (some encoders add one) still verifies.
        let signer = Signer::rsa();
        let token = signer.token("RS256", None, PAYLOAD);
        let only_padded = KeySet {
            keys: vec![keys.keys()[1].clone()],
        };
        assert_eq!(verify(&token, &only_padded).as_deref(), Ok(PAYLOAD));
    }

    #[test]
    fn unusable_key_sets_are_errors() {
        let too_many: Vec<Value> = (0..=MAX_KEYS).map(|_| json!({"kty": "oct"})).collect();
        for document in [
            String::new(),
            "{}".to_owned(),
            "[]".to_owned(),
            r#"{"keys":{}}"#.to_owned(),
            r#"{"keys":[]}"#.to_owned(),
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_owned(),
            json!({ "keys": too_many }).to_string(),
            "[".repeat(10_000),
            " ".repeat(MAX_KEY_SET_LEN + 1),
        ] {
            let err = KeySet::parse(document.as_bytes()).unwrap_err();
            assert!(matches!(err, JwtError::InvalidKeySet(_)), "{err:?}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let signer = Signer::es256();
        let keys = set(&[signer.jwk()]);
        let good = signer.token("ES256", None, PAYLOAD);
        let parts: Vec<&str> = good.split('.').collect();
        let huge_header =
            b64(format!(r#"{{"alg":"ES256","x":"{}"}}"#, "a".repeat(9000)).as_bytes());
        let cases = [
            String::new(),
            ".".to_owned(),
            "..".to_owned(),
            "...".to_owned(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{good}.{}", parts[2]),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}+/", parts[0], parts[1], parts[2]),
            format!("é.{}.{}", parts[1], parts[2]),
            format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
            format!("{}.{}.{}", b64(b"[\"ES256\"]"), parts[1], parts[2]),
            format!("{}.{}.{}", b64(br#"{"kid":"k"}"#), parts[1], parts[2]),
            format!("{}.{}.{}", b64(br#"{"alg":256}"#), parts[1], parts[2]),
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"ES256","kid":1}"#),
                parts[1],
                parts[2]
            ),
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"ES256","crit":["b64"]}"#),
                parts[1],
                parts[2]
            ),
            format!("{huge_header}.{}.{}", parts[1], parts[2]),
            "a".repeat(MAX_TOKEN_LEN + 1),
        ];
        for token in cases {
            let err = verify(&token, &keys).unwrap_err();
            assert!(
                matches!(err, JwtError::Malformed(_)),
                "{token:.80}: {err:?}"
            );
        }
    }

    #[test]
    fn headers_decode_for_diagnostics() {
        let signer = Signer::ed25519();
        let token = signer.token("EdDSA", Some("2024-06"), PAYLOAD);
        assert_eq!(
            decode_header(&token),
            Ok(Header {
                alg: "EdDSA".to_owned(),
                kid: Some("2024-06".to_owned())
            })
        );
        // An unsupported algorithm still decodes; only verify refuses it.
        let token = format!("{}.e30.", b64(br#"{"alg":"none"}"#));
        assert_eq!(decode_header(&token).unwrap().alg, "none");
        assert!(matches!(decode_header("x.y"), Err(JwtError::Malformed(_))));
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            JwtError::BadSignature.to_string(),
            "the ID token's signature does not match the provider's keys"
        );
        assert_eq!(
            JwtError::UnknownKey(Some("k9".to_owned())).to_string(),
            "the provider's keys include none that can check this ID token (key id \"k9\")"
        );
        assert_eq!(
            JwtError::UnknownKey(None).to_string(),
            "the provider's keys include none that can check this ID token"
        );
    }

    /// A small deterministic generator, so a failure can be replayed.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }

        /// `seed` with a few random edits: flips, deletions, insertions of
        /// interesting bytes, truncation.
        fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
            const INTERESTING: &[u8] = b".=-_+/{}[]\":,0\x00\xff eyJA";
            let mut bytes = seed.to_vec();
            for _ in 0..=self.below(4) {
                let at = self.below(bytes.len() + 1);
                match self.below(5) {
                    0 if at < bytes.len() => bytes[at] ^= 1 << self.below(8),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    2 => bytes.insert(at, INTERESTING[self.below(INTERESTING.len())]),
                    3 => bytes.truncate(at),
                    _ => bytes.insert(at, self.next() as u8),
                }
            }
            bytes
        }
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let rsa = Signer::rsa();
        let ec = Signer::es256();
        let keys = set(&[rsa.jwk_with(Some("r"), None), ec.jwk()]);
        let tokens = [
            rsa.token("RS256", Some("r"), PAYLOAD),
            ec.token("ES256", None, PAYLOAD),
        ];
        let document = json!({"keys": [rsa.jwk_with(Some("r"), Some("RS256")), ec.jwk()]})
            .to_string()
            .into_bytes();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..3000 {
            let seed = tokens[round % 2].as_bytes();
            let mutated = rng.mutate(seed);
            let _ = verify(&String::from_utf8_lossy(&mutated), &keys);
            let _ = decode_header(&String::from_utf8_lossy(&mutated));
            let random: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            let _ = verify(&String::from_utf8_lossy(&random), &keys);
            let _ = KeySet::parse(&random);
            if let Ok(mutated_set) = KeySet::parse(&rng.mutate(&document)) {
                let _ = verify(&tokens[0], &mutated_set);
            }
        }
    }
}
