-- Explicit calls: rpc_call('service', 'function', args...) calls any
-- function of any service by name; its type comes from the service.

CREATE RPC SERVICE tools FOR FUNCTION md5, substr, character_length
  WITH (parallelism = 2, on_error = 'null', timeout = '10s', retries = 2);

SELECT rpc_call('tools', 'md5', 'rpcop') AS digest,
       rpc_call('tools', 'substr', 'rpcop service', 7, 7) AS word,
       arrow_typeof(rpc_call('tools', 'character_length', 'abc')) AS type;

SELECT name, functions, instances, requests FROM rpc_services() WHERE name = 'tools';

DROP RPC SERVICE tools;
