//! CLI output: every reply is a protobuf message, printed through the API's
//! descriptor set — as canonical proto3 JSON with `--json`, or as an indented
//! `key: value` listing for humans. One printer for every command.

use std::sync::OnceLock;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(signpost_api::FILE_DESCRIPTOR_SET)
            .expect("the API descriptor set decodes")
    })
}

/// A reply as a JSON value (proto3 JSON mapping, field names as in the proto).
pub fn to_json<M: prost::Message>(message: &M, full_name: &str) -> Value {
    let descriptor = pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is in the descriptor set"));
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message re-decodes with its own descriptor");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("dynamic messages serialize to JSON")
}

/// Parses proto3 JSON (as [`to_json`] writes it) into a message.
pub fn from_json<M: prost::Message + Default>(text: &str, full_name: &str) -> anyhow::Result<M> {
    let descriptor = pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| anyhow::anyhow!("{full_name} is not in the descriptor set"))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize(descriptor, &mut deserializer)?;
    deserializer.end()?;
    Ok(M::decode(dynamic.encode_to_vec().as_slice())?)
}

/// Renders a JSON value as indented `key: value` lines.
pub fn human(value: &Value) -> String {
    let mut out = String::new();
    render(value, 0, &mut out);
    out
}

fn render(value: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::Object(_) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        render(value, indent + 1, out);
                    }
                    Value::Array(items)
                        if items.iter().all(|i| !i.is_object() && !i.is_array()) =>
                    {
                        let items: Vec<String> = items.iter().map(scalar).collect();
                        out.push_str(&format!("{pad}{key}: {}\n", items.join(", ")));
                    }
                    Value::Array(items) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        for item in items {
                            out.push_str(&format!("{pad}  -\n"));
                            render(item, indent + 2, out);
                        }
                    }
                    Value::String(s) if s.contains('\n') => {
                        out.push_str(&format!("{pad}{key}: |\n"));
                        for line in s.lines() {
                            out.push_str(&format!("{pad}  {line}\n"));
                        }
                    }
                    _ => out.push_str(&format!("{pad}{key}: {}\n", scalar(value))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// Strings longer than this without spaces (certificates in base64) are shortened for humans.
const LONG_TOKEN: usize = 96;

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) if s.len() > LONG_TOKEN && !s.contains(' ') => {
            format!("{}… ({} chars; --json for all)", &s[..48], s.len())
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints a reply in the chosen format.
pub fn print<M: prost::Message>(message: &M, full_name: &str, json: bool) {
    let value = to_json(message, full_name);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values serialize")
        );
    } else {
        print!("{}", human(&value));
    }
}
