//! `Resolve` answered from the table's shared route: the generated server wants an owned
//! `ResolveResponse`, which meant a deep copy of the route (a dozen strings and a map)
//! for every lookup, about a third of the handler's CPU under load. [`ResolveReply`]
//! holds the route as the table keeps it, already encoded ([`EncodedRoute`]), and
//! [`ResolveCodec`] copies those bytes into exactly what prost writes for the equivalent
//! `ResolveResponse` (the tests hold them side by side).

use bytes::{BufMut, BytesMut};
use signpost_api::routing::v1 as wire;
use signpost_routing::EncodedRoute;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

/// `ResolveResponse.revision`.
const REVISION: u32 = 1;
/// `ResolveResponse.route`.
const ROUTE: u32 = 2;
/// `ResolveResponse.password`.
const PASSWORD: u32 = 3;
/// `ResolveResponse.domain`.
const DOMAIN: u32 = 4;

/// A `ResolveResponse` whose route is the routing table's own.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolveReply {
    /// The revision the answer was given at.
    pub revision: u64,
    /// The route (`None`: password sign-in).
    pub route: Option<EncodedRoute>,
    /// The normalized domain looked up.
    pub domain: String,
}

impl ResolveReply {
    /// The same answer as a generated message (a copy of the route).
    pub fn into_message(self) -> wire::ResolveResponse {
        let answer = match self.route {
            Some(route) => wire::resolve_response::Answer::Route(route.decode()),
            None => wire::resolve_response::Answer::Password(wire::Password {}),
        };
        wire::ResolveResponse {
            revision: self.revision,
            answer: Some(answer),
            domain: self.domain,
        }
    }

    fn encoded_len(&self) -> usize {
        let revision = if self.revision == 0 {
            0
        } else {
            prost::encoding::uint64::encoded_len(REVISION, &self.revision)
        };
        let answer = match &self.route {
            Some(route) => route.field_len(ROUTE),
            None => prost::encoding::message::encoded_len(PASSWORD, &wire::Password {}),
        };
        let domain = if self.domain.is_empty() {
            0
        } else {
            prost::encoding::string::encoded_len(DOMAIN, &self.domain)
        };
        revision + answer + domain
    }

    fn encode(&self, buf: &mut impl BufMut) {
        if self.revision != 0 {
            prost::encoding::uint64::encode(REVISION, &self.revision, buf);
        }
        match &self.route {
            Some(route) => route.encode_field(ROUTE, buf),
            None => prost::encoding::message::encode(PASSWORD, &wire::Password {}, buf),
        }
        if !self.domain.is_empty() {
            prost::encoding::string::encode(DOMAIN, &self.domain, buf);
        }
    }
}

/// Served by [`crate::unary::serve`] without compression: the route's bytes copied into
/// the answer's one buffer.
impl crate::unary::Answer for ResolveReply {
    fn answer_len(&self) -> usize {
        self.encoded_len()
    }

    fn write_answer(&self, buf: &mut BytesMut) {
        self.encode(buf)
    }
}

/// The codec `Resolve` is served with: [`ResolveReply`]s out, prost-decoded
/// `ResolveRequest`s in.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResolveCodec;

impl Codec for ResolveCodec {
    type Encode = ResolveReply;
    type Decode = wire::ResolveRequest;
    type Encoder = ResolveReplyEncoder;
    type Decoder = ProstDecoder<wire::ResolveRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        ResolveReplyEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Writes [`ResolveReply`]s into the frames tonic sends.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResolveReplyEncoder;

impl Encoder for ResolveReplyEncoder {
    type Item = ResolveReply;
    type Error = Status;

    fn encode(&mut self, reply: ResolveReply, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(reply.encoded_len());
        reply.encode(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn bytes(reply: &ResolveReply) -> Vec<u8> {
        let mut out = Vec::new();
        reply.encode(&mut out);
        assert_eq!(out.len(), reply.encoded_len());
        out
    }

    #[test]
    fn replies_are_byte_for_byte_what_prost_writes() {
        let route = EncodedRoute::encode(&wire::Route {
            domain: "acme-law.com".into(),
            organization_id: "org-1".into(),
            organization_external_id: "ext-1".into(),
            connection_id: "conn-1".into(),
            protocol: 1,
            saml: Some(wire::SamlRoute {
                idp_entity_id: "https://idp.acme-law.com/entity".into(),
                idp_sso_url: "https://idp.acme-law.com/sso".into(),
                idp_sso_binding: 1,
                signing_certificates: vec![wire::CertificateFingerprint {
                    sha256_fingerprint: "ab".repeat(32),
                    not_after_unix: 2_000_000_000,
                }],
                sp_entity_id: "https://signpost.test/sso/saml/conn-1".into(),
                acs_url: "https://signpost.test/sso/saml/conn-1/acs".into(),
            }),
            group_roles: [("Lawyers".to_owned(), "editor".to_owned())].into(),
            require_group: true,
            ..Default::default()
        });
        for reply in [
            ResolveReply {
                revision: 42,
                route: Some(route.clone()),
                domain: "acme-law.com".into(),
            },
            ResolveReply {
                revision: 7,
                route: None,
                domain: "gmail.com".into(),
            },
            ResolveReply {
                revision: 0,
                route: None,
                domain: String::new(),
            },
            ResolveReply {
                revision: 0,
                route: Some(EncodedRoute::encode(&wire::Route::default())),
                domain: "x.example".into(),
            },
        ] {
            let expected = reply.clone().into_message().encode_to_vec();
            assert_eq!(bytes(&reply), expected, "{reply:?}");
            let decoded = wire::ResolveResponse::decode(expected.as_slice()).unwrap();
            assert_eq!(decoded, reply.clone().into_message());
        }
    }
}
