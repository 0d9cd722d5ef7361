-- Annotated functions: no service written by hand.
-- embed and classify ship annotated; the first query that calls one starts
-- its implicit service, later queries find it warm.

SHOW RPC SERVICES;

SELECT classify('the election results are in') AS topic;

SELECT name, kind, instances FROM rpc_services();

-- annotate a built-in from SQL: no name, one function
CREATE RPC SERVICE FOR FUNCTION sha256 WITH (parallelism = 1);

SELECT encode(sha256('rpcop'), 'hex') AS digest;

-- compare with everything in-process
CREATE TABLE notes (body VARCHAR) AS VALUES ('a late goal'), ('a new gpu');
SET rpcop.rewrite = false;
EXPLAIN SELECT classify(body) FROM notes;
SET rpcop.rewrite = true;
EXPLAIN SELECT classify(body) FROM notes;

-- dropping an implicit service drops the annotation: in-process again
DROP RPC SERVICE sha256;
DROP RPC SERVICE classify;
DROP TABLE notes;
