//! The bytes of rpcop's plan nodes inside a Ballista plan: a magic prefix
//! and a version, then a protobuf message of the node.
//!
//! The prefix tells rpcop's nodes from those of Ballista's own codec, which
//! the codecs hand everything else to; the version lets a process refuse a
//! node it cannot read, saying why, instead of misreading it.

use datafusion::common::{DataFusionError, Result};
use datafusion_proto::protobuf::{Field, LogicalExprNode, PhysicalExprNode};
use prost::Message;

/// The first bytes of every node rpcop encodes.
const MAGIC: &[u8] = b"rpcop\0";

/// The version of the nodes this build writes and reads.
pub(crate) const PAYLOAD_VERSION: u8 = 1;

/// The `RpcProxy` logical node.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct LogicalProxy {
    /// The service's name.
    #[prost(string, tag = "1")]
    pub(crate) service: String,
    /// Its load-balancing policy (shown by `EXPLAIN`).
    #[prost(string, tag = "2")]
    pub(crate) policy: String,
    /// Its definition (`ServiceDefinition`, versioned on its own).
    #[prost(string, tag = "3")]
    pub(crate) definition: String,
    /// The calls, in the order of their output columns.
    #[prost(message, repeated, tag = "4")]
    pub(crate) calls: Vec<LogicalCall>,
}

/// One call of the `RpcProxy` logical node.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct LogicalCall {
    /// The name of the function in the session that planned it.
    #[prost(string, tag = "1")]
    pub(crate) udf: String,
    /// The name the service hosts it under.
    #[prost(string, tag = "2")]
    pub(crate) function: String,
    /// Its output column.
    #[prost(string, tag = "3")]
    pub(crate) name: String,
    /// Its arguments, over the node's input.
    #[prost(message, repeated, tag = "4")]
    pub(crate) args: Vec<LogicalExprNode>,
    /// The `Int8` guard of the rows it is evaluated on, if any.
    #[prost(message, optional, tag = "5")]
    pub(crate) guard: Option<LogicalExprNode>,
    /// Its result field.
    #[prost(message, optional, tag = "6")]
    pub(crate) result: Option<Field>,
}

/// The `RpcProxyExec` operator.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PhysicalProxy {
    /// The service's definition (`ServiceDefinition`).
    #[prost(string, tag = "1")]
    pub(crate) definition: String,
    /// The calls, in the order of their output columns.
    #[prost(message, repeated, tag = "2")]
    pub(crate) calls: Vec<PhysicalCall>,
}

/// One call of the `RpcProxyExec` operator.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PhysicalCall {
    /// The name the service hosts the function under.
    #[prost(string, tag = "1")]
    pub(crate) function: String,
    /// Its arguments, over the operator's input.
    #[prost(message, repeated, tag = "2")]
    pub(crate) args: Vec<PhysicalExprNode>,
    /// The `Int8` guard of the rows it is evaluated on, if any.
    #[prost(message, optional, tag = "3")]
    pub(crate) guard: Option<PhysicalExprNode>,
    /// Its result field.
    #[prost(message, optional, tag = "4")]
    pub(crate) result: Option<Field>,
}

/// Writes `node` as rpcop's node.
pub(crate) fn write(node: &impl Message, buf: &mut Vec<u8>) {
    buf.extend_from_slice(MAGIC);
    buf.push(PAYLOAD_VERSION);
    buf.extend_from_slice(&node.encode_to_vec());
}

/// Reads rpcop's node from `buf`; `None` when `buf` is not one (it is
/// another codec's).
pub(crate) fn read<M: Message + Default>(buf: &[u8]) -> Result<Option<M>> {
    let Some(rest) = buf.strip_prefix(MAGIC) else {
        return Ok(None);
    };
    let Some((&version, body)) = rest.split_first() else {
        return Err(invalid("it ends after its prefix"));
    };
    if version != PAYLOAD_VERSION {
        return Err(DataFusionError::Plan(format!(
            "the plan holds an rpcop node of version {version}, this process reads version \
             {PAYLOAD_VERSION}: run the same rpcop release on the client, the scheduler and \
             the executors"
        )));
    }
    M::decode(body)
        .map(Some)
        .map_err(|e| invalid(&e.to_string()))
}

/// A node that claims to be rpcop's but is not readable.
fn invalid(why: &str) -> DataFusionError {
    DataFusionError::Plan(format!("the plan holds a damaged rpcop node: {why}"))
}

/// A call's result field as a node carries it.
pub(crate) fn write_field(field: &datafusion::arrow::datatypes::Field) -> Result<Option<Field>> {
    Field::try_from(field)
        .map(Some)
        .map_err(|e| DataFusionError::Plan(e.to_string()))
}

/// A call's result field, which a node must carry.
pub(crate) fn read_field(field: Option<&Field>) -> Result<datafusion::arrow::datatypes::Field> {
    let field = field.ok_or_else(|| invalid("a call has no result field"))?;
    datafusion::arrow::datatypes::Field::try_from(field).map_err(|e| invalid(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_reads_back_and_others_pass_through() {
        let node = PhysicalProxy {
            definition: "{}".into(),
            calls: vec![PhysicalCall {
                function: "embed".into(),
                ..Default::default()
            }],
        };
        let mut buf = Vec::new();
        write(&node, &mut buf);
        assert_eq!(read::<PhysicalProxy>(&buf).expect("reads"), Some(node));
        // Ballista's own nodes are not rpcop's
        assert_eq!(
            read::<PhysicalProxy>(b"\x0a\x03abc").expect("not ours"),
            None
        );
    }

    #[test]
    fn another_version_or_a_damaged_node_is_refused() {
        let mut buf = Vec::new();
        write(&PhysicalProxy::default(), &mut buf);
        buf[MAGIC.len()] = PAYLOAD_VERSION + 1;
        let error = read::<PhysicalProxy>(&buf).expect_err("refused");
        assert!(error.to_string().contains("same rpcop release"), "{error}");
        let mut damaged = MAGIC.to_vec();
        damaged.extend_from_slice(&[PAYLOAD_VERSION, 0x0a, 0xff]);
        let error = read::<PhysicalProxy>(&damaged).expect_err("damaged");
        assert!(error.to_string().contains("damaged rpcop node"), "{error}");
    }
}
