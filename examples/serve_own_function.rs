//! Host your own function in a binary of your own, with the same flags and
//! wire protocol as `rpcop serve`:
//!
//! ```sh
//! echo s3cret > /tmp/token
//! cargo run --example serve_own_function -- --bind 127.0.0.1:0 \
//!     --function reverse --function upper --token-file /tmp/token
//! ```
//!
//! Its functions:
//! - `reverse(text)`: the text, characters reversed;
//! - `visible_devices(text)`: the instance's `CUDA_VISIBLE_DEVICES` (what a
//!   model would load onto), to see the `gpus` option hand each instance its
//!   own devices;
//! - `allocate(mib)`: holds `mib` MiB while it runs, to see the `memory`
//!   option end an instance that exceeds it.
//!
//! A region started with `isolation = 'process'` can run it too:
//! `ServiceRegion::builder(..).serve_program(path_to_this_binary)` (its first
//! argument is then `serve`, which this example accepts and skips).

use std::sync::Arc;

use clap::Parser;
use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::Int64Type;
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

/// `visible_devices(text)`: this process's `CUDA_VISIBLE_DEVICES`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct VisibleDevices {
    signature: Signature,
}

impl ScalarUDFImpl for VisibleDevices {
    fn name(&self) -> &str {
        "visible_devices"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let devices = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let out = StringArray::from(vec![devices; args.number_rows]);
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `allocate(mib)`: touches `mib` MiB of fresh memory, returns `mib`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Allocate {
    signature: Signature,
}

impl ScalarUDFImpl for Allocate {
    fn name(&self) -> &str {
        "allocate"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let input = args.args[0].to_array(args.number_rows)?;
        let sizes = input.as_primitive::<Int64Type>();
        for mib in sizes.iter().flatten() {
            let bytes = usize::try_from(mib.max(0)).unwrap_or(0) << 20;
            let block = vec![1u8; bytes];
            std::hint::black_box(&block);
        }
        Ok(ColumnarValue::Array(input))
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
    let text = || Signature::exact(vec![DataType::Utf8], Volatility::Immutable);
    let library = FunctionLibrary::default()
        .with_udf(ScalarUDF::new_from_impl(Reverse { signature: text() }))
        .with_udf(ScalarUDF::new_from_impl(VisibleDevices {
            signature: text(),
        }))
        .with_udf(ScalarUDF::new_from_impl(Allocate {
            signature: Signature::exact(vec![DataType::Int64], Volatility::Volatile),
        }));
    match serve_main(&args.serve, &library) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("serve_own_function: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
