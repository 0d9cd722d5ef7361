//! Host your own function in a binary of your own, with the same flags and
//! wire protocol as `rpcop serve`:
//!
//! ```sh
//! echo s3cret > /tmp/token
//! cargo run --example serve_own_function -- --bind 127.0.0.1:0 \
//!     --function reverse --function upper --token-file /tmp/token
//! ```
//!
//! A region started with `isolation = 'process'` can run it too:
//! `ServiceRegion::builder(..).serve_program(path_to_this_binary)` (its first
//! argument is then `serve`, which this example accepts and skips).

use std::sync::Arc;

use clap::Parser;
use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use rpcop::FunctionLibrary;
use rpcop::serve::{ServeArgs, serve_main};

/// `reverse(text)`: the text, characters reversed.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Reverse {
    signature: Signature,
}

impl ScalarUDFImpl for Reverse {
    fn name(&self) -> &str {
        "reverse"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let input = args.args[0].to_array(args.number_rows)?;
        let out: StringArray = input
            .as_string::<i32>()
            .iter()
            .map(|t| t.map(|t| t.chars().rev().collect::<String>()))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> std::process::ExitCode {
    // accept `serve` as the first argument, as a region's process launcher passes it
    let argv = std::env::args()
        .enumerate()
        .filter(|(i, a)| !(*i == 1 && a == "serve"));
    let args = Args::parse_from(argv.map(|(_, a)| a));
    let library = FunctionLibrary::default().with_udf(ScalarUDF::new_from_impl(Reverse {
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    }));
    match serve_main(&args.serve, &library) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("serve_own_function: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
