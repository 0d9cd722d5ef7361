"""Host Python functions as rpcop service instances.

```
from rpcop_service import udf, serve

@udf(input_types=["VARCHAR"], result_type="BIGINT")
def text_length(s):
    return len(s) if s is not None else None

if __name__ == "__main__":
    serve(text_length)
```

The surface follows RisingWave's arrow-udf (``@udf``, SQL type names,
``batch=True``); the wire is rpcop's protocol (``docs/protocol.md``).
"""

from .function import ScalarFunction, udf
from .server import InstanceServer, serve
from .types import to_data_type

__all__ = ["ScalarFunction", "InstanceServer", "serve", "to_data_type", "udf"]
