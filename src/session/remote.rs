//! Functions that exist only in a service: those of a command's instances
//! (a Python model) or of `ENDPOINTS`, which this session has no code for.
//!
//! When such a service starts, each function its instances describe
//! (`GetFlightInfo`) and the session does not know is registered as a
//! [`RemoteFunction`] of that signature, so SQL can call it by name
//! (`reverse_text(col)`) and the rewrite sends the call to the service. Its
//! arguments are coerced to the described types (a call that cannot be is
//! a planning error naming both signatures), and its type is the described
//! result type. It has no in-process implementation: evaluated outside its
//! service (`SET rpcop.rewrite = false`), it fails and says why. Dropping
//! the service unregisters it.

use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::options::Protocol;
use crate::wire::FunctionSignature;

/// A function of a service, known here only by its description.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct RemoteFunction {
    name: String,
    service: String,
    protocol: Protocol,
    arguments: Vec<DataType>,
    result: DataType,
    signature: Signature,
}

impl RemoteFunction {
    /// The function `name`, as the instances of `service` describe it.
    pub(crate) fn new(
        name: &str,
        service: &str,
        protocol: Protocol,
        described: &FunctionSignature,
    ) -> Self {
        Self {
            name: name.to_string(),
            service: service.to_string(),
            protocol,
            arguments: described
                .arguments
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
            result: described.result.data_type().clone(),
            // user-defined coercion needs an argument to coerce
            signature: if described.arguments.is_empty() {
                Signature::nullary(Volatility::Immutable)
            } else {
                Signature::user_defined(Volatility::Immutable)
            },
        }
    }

    fn described(&self) -> String {
        let arguments: Vec<String> = self.arguments.iter().map(ToString::to_string).collect();
        format!("{}({}) -> {}", self.name, arguments.join(", "), self.result)
    }
}

impl ScalarUDFImpl for RemoteFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.result.clone())
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let fits = arg_types.len() == self.arguments.len()
            && arg_types
                .iter()
                .zip(&self.arguments)
                .all(|(given, wanted)| given == wanted || can_cast_types(given, wanted));
        if !fits {
            let given: Vec<String> = arg_types.iter().map(ToString::to_string).collect();
            return plan_err!(
                "function '{}' of RPC service '{}' is {}, as its instances describe it; it \
                 cannot be called with ({})",
                self.name,
                self.service,
                self.described(),
                given.join(", ")
            );
        }
        Ok(self.arguments.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "function '{}' exists only in RPC service '{}' (protocol '{}'): this session has no \
             code for it, so it runs only where rpcop sends it; SET rpcop.rewrite = true, or \
             call rpc_call('{}', '{}', ...)",
            self.name,
            self.service,
            self.protocol,
            self.service,
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;
    use std::sync::Arc;

    #[test]
    fn calls_are_coerced_to_the_described_types_or_refused() {
        let described = FunctionSignature {
            name: "reverse_text".into(),
            arguments: vec![Arc::new(Field::new("s", DataType::Utf8, true))],
            result: Arc::new(Field::new("reverse_text", DataType::Utf8, true)),
        };
        let f = RemoteFunction::new("reverse_text", "py", Protocol::ArrowUdf, &described);
        assert_eq!(
            f.coerce_types(&[DataType::LargeUtf8]).unwrap(),
            vec![DataType::Utf8]
        );
        let e = f
            .coerce_types(&[DataType::Utf8, DataType::Utf8])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is reverse_text(Utf8) -> Utf8, as its instances describe it; it cannot be called with (Utf8, Utf8)"),
            "{e}"
        );
        assert_eq!(f.return_type(&[DataType::Utf8]).unwrap(), DataType::Utf8);
    }
}
