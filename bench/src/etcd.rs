//! The etcd peer: a client for the subset of etcd's v3 API the scenarios use
//! (generated from `bench/proto/etcd.proto`, etcd's own field numbers), on
//! the same tonic stack as the Signpost client.

use tonic::transport::Channel;

/// Generated from `proto/etcd.proto` (package `etcdserverpb`).
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's KV client.
pub type Kv = pb::kv_client::KvClient<Channel>;

/// A KV client on `channel`.
pub fn kv(channel: &Channel) -> Kv {
    pb::kv_client::KvClient::new(channel.clone()).max_decoding_message_size(512 << 20)
}

/// One put.
pub async fn put(client: &mut Kv, key: Vec<u8>, value: Vec<u8>) -> Result<i64, tonic::Status> {
    let reply = client
        .put(pb::PutRequest {
            key,
            value,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(reply.header.map(|h| h.revision).unwrap_or_default())
}

/// The end of the range of every key starting with `prefix` (etcd's
/// `clientv3.GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A value of `bytes` bytes for key `i`.
pub fn value_of(i: usize, bytes: usize) -> Vec<u8> {
    let tag = format!("v{i}:");
    let mut value = tag.into_bytes();
    value.resize(bytes.max(1), b'x');
    value.truncate(bytes.max(1));
    value
}
