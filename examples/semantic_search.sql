-- Semantic search with a real model: all-MiniLM-L6-v2 sentence embeddings,
-- computed by a service of two instances, over 2,089 help-center texts
-- (examples/data/help_center.csv, written for rpcop, Apache-2.0).
-- First, once per machine:   rpcop model fetch all-MiniLM-L6-v2
-- Then, from the repository root:   rpcop -f examples/semantic_search.sql

CREATE EXTERNAL TABLE help STORED AS CSV LOCATION 'examples/data/help_center.csv'
  OPTIONS ('format.has_header' 'true');

-- each instance loads the model once (the start-up the service pays for
-- every query after it). A request's timeout (30 s) counts its wait in an
-- instance's queue too: requests of 64 sentences, at most 2 in flight per
-- partition, keep every one well within it
CREATE RPC SERVICE minilm FOR FUNCTION embed_text WITH (parallelism = 2, batch_size = 64, max_in_flight = 2);

-- embed the corpus once into a table
CREATE TABLE help_vectors AS
  SELECT id, topic, body, embed_text(body) AS v FROM help;

-- the five texts nearest in meaning to a question, whatever their words
SELECT body, round(cosine_similarity(v, embed_text('how do I reset my password')), 4) AS score
FROM help_vectors ORDER BY score DESC LIMIT 5;

SELECT body, round(cosine_similarity(v, embed_text('I want my money back')), 4) AS score
FROM help_vectors ORDER BY score DESC LIMIT 5;

-- per topic, the text most like a question about a broken phone
SELECT topic, round(max(cosine_similarity(v, embed_text('my phone screen cracked'))), 4) AS best
FROM help_vectors GROUP BY topic ORDER BY best DESC LIMIT 3;

SHOW RPC SERVICES;

DROP RPC SERVICE minilm;
