"""A small library of Python functions, served to rpcop by the kit.

Run by rpcop as a command (see demo.sql), one process per instance:

    CREATE RPC SERVICE text FOR FUNCTION slugify, sentiment, word_count
    WITH (command = 'python3 examples/python_service/functions.py', parallelism = 2);
"""

import re
import unicodedata

import pyarrow.compute as pc

from rpcop_service import serve, udf

POSITIVE = {"good", "great", "love", "excellent", "fast", "happy"}
NEGATIVE = {"bad", "awful", "hate", "slow", "broken", "sad"}
MODEL = {}


def load_model():
    """Runs once per instance before it reports ready: load weights here."""
    MODEL["positive"], MODEL["negative"] = POSITIVE, NEGATIVE


@udf(input_types=["VARCHAR"], result_type="VARCHAR")
def slugify(title):
    """Row-wise: one Python value in, one out."""
    if title is None:
        return None
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@udf(input_types=["VARCHAR"], result_type="VARCHAR")
def sentiment(text):
    if text is None:
        return None
    words = set(re.findall(r"[a-z]+", text.lower()))
    score = len(words & MODEL["positive"]) - len(words & MODEL["negative"])
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


@udf(input_types=["VARCHAR"], result_type="BIGINT", batch=True)
def word_count(texts):
    """Batched: a whole pyarrow column in, one array out (the fast path)."""
    return pc.list_value_length(pc.utf8_split_whitespace(texts))


if __name__ == "__main__":
    serve(slugify, sentiment, word_count, setup=load_model)
