-- Python functions served by rpcop: run with examples/python_service/run.sh
-- (it puts a python3 with pyarrow and the kit on PATH).

CREATE TABLE reviews (id INT, title VARCHAR, body VARCHAR) AS VALUES
  (1, 'Fast & Great!', 'I love it, great and fast'),
  (2, 'Broken on arrival', 'awful, it came broken'),
  (3, 'Crème Brûlée Maker', 'it makes creme brulee'),
  (4, NULL, NULL);

-- Explicit: a named service hosting two functions, two instances.
CREATE RPC SERVICE text FOR FUNCTION sentiment, word_count
WITH (command = 'python3 examples/python_service/functions.py', parallelism = 2);

-- Implicit: annotating slugify starts its own service; the rewrite sends
-- every slugify(...) call there.
CREATE RPC SERVICE FOR FUNCTION slugify
WITH (command = 'python3 examples/python_service/functions.py');

SELECT id, slugify(title) AS slug, sentiment(body) AS mood, word_count(body) AS words
FROM reviews ORDER BY id;

-- Explicitly, by service and function name.
SELECT id, rpc_call('text', 'sentiment', body) AS mood FROM reviews ORDER BY id;

SELECT name, kind, functions, instances, requests, errors FROM rpc_services() ORDER BY name;
