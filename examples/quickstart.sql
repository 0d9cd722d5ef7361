-- A first session: a service for two functions, queried, scaled, dropped.
-- Run from the repository root: rpcop -f examples/*.sql (all of them)

CREATE EXTERNAL TABLE docs STORED AS CSV LOCATION 'examples/data/docs.csv'
  OPTIONS ('format.has_header' 'true');

-- a pool of 2 instances hosting the demo models classify and embed
CREATE RPC SERVICE models FOR FUNCTION classify, embed
  WITH (parallelism = 2, load_balance = 'least_outstanding', batch_size = 4096);

-- implicit rewriting: classify() and embed() now run on the pool
SELECT id, title, classify(body) AS topic, round(embed(body)[1], 3) AS e1
FROM docs WHERE classify(body) IN ('news', 'sports') ORDER BY id;

EXPLAIN SELECT embed(body) FROM docs WHERE classify(body) = 'news';

SHOW RPC SERVICES;

ALTER RPC SERVICE models SET (parallelism = 3);

SELECT classify(body) AS topic, count(*) AS docs FROM docs GROUP BY classify(body) ORDER BY topic;

DESCRIBE RPC SERVICE models;

DROP RPC SERVICE models;
