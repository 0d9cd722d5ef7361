//! The rewrite never changes an answer: a corpus of queries, written and
//! generated, runs with `rpcop.rewrite` on (the calls go to services) and off
//! (DataFusion alone), and the answers are compared, errors included.
//!
//! The corpus covers the shapes DataFusion's own sqllogictests give a scalar
//! call: projections, filters, CASE, COALESCE, AND/OR, IN/EXISTS/scalar
//! subqueries (correlated or not), CTEs, UNION, GROUP BY/HAVING, GROUPING
//! SETS, window arguments, join keys and filters, ORDER BY/LIMIT, DISTINCT.
//! Half of the functions are hosted; two of them (`to_timestamp`, `chr`)
//! fail on some rows, so conditional evaluation shows in the answers.
//!
//! One rule keeps generated queries comparable: a function that can fail is
//! never put on the right side of AND/OR. DataFusion evaluates that side on
//! every row of a batch unless at most 20% of the left is true, so whether it
//! fails there depends on the batch, not on the query. A hosted call there is
//! sent only for the rows where the left does not decide (never more rows than
//! DataFusion evaluates), which `tests/slt/conditional.slt` checks by hand.

#![allow(clippy::unwrap_used)]

use rpcop::RpcSession;

mod common;

/// How many queries the grammar generates.
const GENERATED: usize = 1500;

/// A small deterministic generator (xorshift64*): the same corpus every run.
struct Gen(u64);

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// The columns an expression may read.
struct Scope {
    strings: &'static [&'static str],
    ints: &'static [&'static str],
    dates: &'static [&'static str],
}

const T: Scope = Scope {
    strings: &["t.a", "t.b"],
    ints: &["t.id", "t.n"],
    dates: &["t.d"],
};

const U: Scope = Scope {
    strings: &["u.k"],
    ints: &["u.m"],
    dates: &["u.k"],
};

/// Expressions of one scope. `partial`: may contain a call that fails on
/// some rows outside a guarding CASE.
impl Gen {
    fn string(&mut self, s: &Scope, depth: usize, partial: bool) -> String {
        if depth == 0 || self.chance(25) {
            return match self.below(6) {
                0 => "'Ab c'".to_string(),
                1 => "''".to_string(),
                _ => self.pick(s.strings).to_string(),
            };
        }
        let d = depth - 1;
        match self.below(13) {
            0 | 1 => format!("upper({})", self.string(s, d, partial)),
            2 => format!("btrim({})", self.string(s, d, partial)),
            3 => format!("reverse({})", self.string(s, d, partial)),
            4 => format!("md5({})", self.string(s, d, partial)),
            5 => format!("lower({})", self.string(s, d, partial)),
            6 => format!(
                "concat({}, {})",
                self.string(s, d, partial),
                self.string(s, d, partial)
            ),
            7 => {
                let when = self.boolean(s, d, partial);
                let then = self.string(s, d, partial);
                if self.chance(50) {
                    format!("CASE WHEN {when} THEN {then} END")
                } else {
                    format!(
                        "CASE WHEN {when} THEN {then} ELSE {} END",
                        self.string(s, d, partial)
                    )
                }
            }
            8 => format!(
                "coalesce({}, {})",
                self.string(s, d, partial),
                self.string(s, d, partial)
            ),
            // a failing call, guarded: never fails
            9 => format!(
                "CASE WHEN {0} LIKE '20%' THEN CAST(to_timestamp({0}) AS VARCHAR) END",
                self.pick(s.dates)
            ),
            10 => format!(
                "CASE WHEN {0} > 0 THEN chr({0} + 64) ELSE {1} END",
                self.int(s, d, false),
                self.string(s, d, partial)
            ),
            // a failing call, unguarded (rarely: every such query fails)
            11 if partial && self.chance(15) => {
                format!("CAST(to_timestamp({}) AS VARCHAR)", self.pick(s.dates))
            }
            _ => format!("upper({})", self.string(s, d, partial)),
        }
    }

    fn int(&mut self, s: &Scope, depth: usize, partial: bool) -> String {
        if depth == 0 || self.chance(30) {
            return match self.below(5) {
                0 => "2".to_string(),
                1 => "-3".to_string(),
                _ => self.pick(s.ints).to_string(),
            };
        }
        let d = depth - 1;
        match self.below(8) {
            0 | 1 => format!("character_length({})", self.string(s, d, partial)),
            2 => format!("abs({})", self.int(s, d, partial)),
            3 => format!(
                "({} + {})",
                self.int(s, d, partial),
                self.int(s, d, partial)
            ),
            4 => format!("length({})", self.string(s, d, partial)),
            5 => format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                self.boolean(s, d, partial),
                self.int(s, d, partial),
                self.int(s, d, partial)
            ),
            6 => format!(
                "coalesce({}, {})",
                self.int(s, d, partial),
                self.int(s, d, partial)
            ),
            _ => format!("character_length(upper({}))", self.string(s, d, partial)),
        }
    }

    fn boolean(&mut self, s: &Scope, depth: usize, partial: bool) -> String {
        let d = depth.saturating_sub(1);
        match self.below(9) {
            0 => format!(
                "{} = {}",
                self.string(s, d, partial),
                self.string(s, d, partial)
            ),
            1 => format!("{} > {}", self.int(s, d, partial), self.int(s, d, partial)),
            2 => format!("{} LIKE '%a%'", self.string(s, d, partial)),
            3 => format!("{} IS NULL", self.string(s, d, partial)),
            4 => format!("{} IN (1, 2, 5)", self.int(s, d, partial)),
            5 => format!("NOT ({})", self.boolean(s, d, partial)),
            // the right side of AND/OR: nothing that may fail
            6 => format!(
                "({} AND {})",
                self.boolean(s, d, partial),
                self.boolean(s, d, false)
            ),
            7 => format!(
                "({} OR {})",
                self.boolean(s, d, partial),
                self.boolean(s, d, false)
            ),
            _ => format!("{} <> ''", self.string(s, d, partial)),
        }
    }

    /// One query, of a shape picked at random.
    fn query(&mut self) -> String {
        let p = self.chance(30);
        match self.below(16) {
            0 | 1 => format!(
                "SELECT t.id, {}, {} FROM t",
                self.string(&T, 3, p),
                self.int(&T, 2, p)
            ),
            2 => format!(
                "SELECT t.id, {} FROM t WHERE {}",
                self.string(&T, 2, p),
                self.boolean(&T, 3, p)
            ),
            3 => format!(
                "SELECT {} AS g, count(*), sum({}) FROM t GROUP BY 1 HAVING count(*) >= {}",
                self.string(&T, 2, p),
                self.int(&T, 2, p),
                self.below(2) + 1
            ),
            4 => format!("SELECT DISTINCT {} FROM t", self.string(&T, 3, p)),
            5 => {
                let key = self.string(&T, 2, p);
                format!(
                    "SELECT t.id, {key} FROM t ORDER BY {key}, t.id LIMIT {}",
                    self.below(5) + 1
                )
            }
            6 => format!(
                "WITH c AS (SELECT t.id, {} AS x, {} AS y FROM t WHERE {}) \
                 SELECT upper(x), y + 1 FROM c",
                self.string(&T, 2, p),
                self.int(&T, 2, p),
                self.boolean(&T, 2, p)
            ),
            7 => format!(
                "SELECT {} FROM t UNION {} SELECT {} FROM u",
                self.string(&T, 2, p),
                if self.chance(50) { "ALL" } else { "" },
                self.string(&U, 2, p)
            ),
            8 => format!(
                "SELECT t.id, u.m FROM t JOIN u ON {} = {}",
                self.string(&T, 2, p),
                self.string(&U, 2, p)
            ),
            9 => format!(
                "SELECT t.id, u.m FROM t LEFT JOIN u ON t.n = u.m AND {}",
                self.boolean(&T, 2, false)
            ),
            10 => {
                let window = match self.below(3) {
                    0 => format!("sum({})", self.int(&T, 2, p)),
                    1 => "row_number()".to_string(),
                    _ => format!("first_value({})", self.string(&T, 2, p)),
                };
                format!(
                    "SELECT t.id, {window} OVER (PARTITION BY {} ORDER BY t.id) FROM t",
                    self.string(&T, 2, p)
                )
            }
            11 if self.chance(30) => format!(
                // DataFusion 55 answers `<constant> NOT IN (subquery with a
                // NULL)` wrongly (apache/datafusion#25340, fixed after 55.2);
                // rpcop's proxy makes the constant a column and answers it
                // right, so the left side here always reads a column
                "SELECT t.id FROM t WHERE concat(t.a, {}) NOT IN (SELECT {} FROM u)",
                self.string(&T, 2, p),
                self.string(&U, 2, p)
            ),
            11 => format!(
                "SELECT t.id FROM t WHERE {} IN (SELECT {} FROM u)",
                self.string(&T, 2, p),
                self.string(&U, 2, p)
            ),
            12 => format!(
                "SELECT t.id FROM t WHERE {}EXISTS (SELECT 1 FROM u WHERE {} = {})",
                if self.chance(30) { "NOT " } else { "" },
                self.string(&U, 2, p),
                self.string(&T, 2, p)
            ),
            13 => format!(
                "SELECT t.id, (SELECT max({}) FROM u WHERE u.m = t.n) FROM t",
                self.string(&U, 2, p)
            ),
            14 => {
                let (x, y) = (self.string(&T, 2, p), self.string(&T, 1, p));
                format!(
                    "SELECT {x}, {y}, count(*) FROM t GROUP BY GROUPING SETS (({x}), ({y}), ())"
                )
            }
            _ => format!(
                "SELECT x FROM (SELECT {} AS x FROM t) s WHERE {}",
                self.string(&T, 2, p),
                if self.chance(50) {
                    "x IS NOT NULL"
                } else {
                    "x <> upper(x)"
                }
            ),
        }
    }
}

/// Queries written by hand: each shape once, with the issue's own cases.
fn written() -> Vec<String> {
    [
        "SELECT id, CASE WHEN d LIKE '20%' THEN to_timestamp(d) END FROM t",
        "SELECT id, CASE WHEN id >= 2 THEN to_timestamp(d) END FROM t",
        "SELECT id, to_timestamp(d) FROM t",
        "SELECT id, coalesce(CASE WHEN d LIKE '20%' THEN to_timestamp(d) END, to_timestamp('2000-01-01')) FROM t",
        "SELECT id, nvl2(n, chr(abs(n) + 65), 'none') FROM t",
        "SELECT id, CASE n WHEN 0 THEN 'zero' WHEN -1 THEN 'minus' ELSE chr(n) END FROM t",
        "SELECT id FROM t WHERE d LIKE '20%' AND id < 0 AND to_timestamp(d) IS NOT NULL",
        "SELECT id, chr(n) FROM t",
        "SELECT id FROM t WHERE upper(a) IN (SELECT upper(k) FROM u)",
        "SELECT id FROM t WHERE upper(a) NOT IN (SELECT upper(k) FROM u WHERE k IS NOT NULL)",
        "SELECT id, (SELECT max(upper(k)) FROM u WHERE u.m = t.n) FROM t",
        "SELECT id FROM t WHERE EXISTS (SELECT 1 FROM u WHERE upper(u.k) = upper(t.a) AND u.m <> t.id)",
        "SELECT id FROM t WHERE n > (SELECT min(character_length(k)) FROM u)",
        "WITH c AS (SELECT id, upper(a) AS x FROM t) SELECT x, count(*) FROM c GROUP BY x",
        "SELECT upper(a) FROM t UNION SELECT upper(k) FROM u",
        "SELECT upper(a), count(*) FROM t GROUP BY upper(a) HAVING count(*) > 0 AND upper(a) <> 'X'",
        "SELECT upper(max(a)) FROM t GROUP BY n HAVING upper(max(a)) > 'A'",
        "SELECT upper(a), md5(b), count(*) FROM t GROUP BY GROUPING SETS ((upper(a)), (md5(b)), ())",
        "SELECT id, sum(character_length(a)) OVER (PARTITION BY upper(b) ORDER BY id) FROM t",
        "SELECT id, rank() OVER (ORDER BY upper(a), id) FROM t",
        "SELECT t.id, u.m FROM t JOIN u ON upper(t.a) = upper(u.k)",
        "SELECT t.id, u.m FROM t LEFT JOIN u ON t.n = u.m AND upper(t.b) = 'Y'",
        "SELECT t.id, u.m FROM t, u WHERE t.n = u.m AND upper(t.a) = upper(u.k)",
        "SELECT id, upper(a) FROM t ORDER BY upper(a), id LIMIT 3",
        "SELECT DISTINCT upper(btrim(a)) FROM t",
        "SELECT upper('constant'), character_length('four')",
        "SELECT md5(upper(reverse(a))) FROM t",
        "SELECT id, upper(a) || '!' , upper(a) FROM t WHERE upper(a) IS NOT NULL",
        "SELECT count(DISTINCT md5(a)) FROM t",
        "SELECT id, CASE WHEN upper(a) = 'AB C' THEN md5(b) ELSE reverse(b) END FROM t",
        "SELECT id, upper(a) FROM t WHERE id IN (SELECT m FROM u WHERE upper(k) IS NOT NULL)",
        "SELECT x FROM (SELECT upper(a) AS x FROM t) s WHERE x <> ''",
        "SELECT id, abs(n), chr(abs(n) + 65) FROM t ORDER BY id",
        "SELECT id, to_timestamp(d) FROM t WHERE d LIKE '20%'",
        "SELECT id, to_timestamp(d) FROM t WHERE id IN (SELECT id FROM t WHERE d LIKE '20%')",
    ]
    .iter()
    .map(|q| q.to_string())
    .collect()
}

/// The rows of an answer, sorted, or the error.
async fn answer(session: &RpcSession, sql: &str) -> Result<Vec<String>, String> {
    let batches = session.sql(sql).await.map_err(|e| e.strip_backtrace())?;
    let mut rows: Vec<String> = common::cells(&batches)?
        .into_iter()
        .map(|row| row.join(" | "))
        .collect();
    rows.sort();
    Ok(rows)
}

/// What kind of failure an in-process error is: its text up to the first
/// quoted value. Which row fails first depends on how rows are batched, so
/// the value may differ (`'not a date'` or `'soon'`), the failure may not.
fn kind(error: &str) -> &str {
    let text = error.split('\'').next().unwrap_or(error);
    text.rsplit("error: ").next().unwrap_or(text).trim()
}

/// A session whose services host half of the grammar's functions, with
/// small requests: guards select rows within and across requests.
async fn services() -> RpcSession {
    let session = RpcSession::new();
    session
        .sql("CREATE RPC SERVICE text FOR FUNCTION upper, btrim, reverse, md5, character_length WITH (parallelism = 2, batch_size = 3)")
        .await
        .unwrap();
    session
        .sql("CREATE RPC SERVICE num FOR FUNCTION abs, chr, to_timestamp WITH (parallelism = 2, batch_size = 4)")
        .await
        .unwrap();
    session
}

/// `sql` with the rewrite on (through the services) and off (in-process):
/// both answers, and whether they agree (failing both ways with the same
/// kind of error counts as agreeing).
async fn both_ways(
    session: &RpcSession,
    sql: &str,
) -> (
    Result<Vec<String>, String>,
    Result<Vec<String>, String>,
    bool,
) {
    session.sql("SET rpcop.rewrite = true").await.unwrap();
    let hosted = answer(session, sql).await;
    session.sql("SET rpcop.rewrite = false").await.unwrap();
    let local = answer(session, sql).await;
    let same = match (&hosted, &local) {
        (Ok(h), Ok(l)) => h == l,
        (Err(h), Err(l)) => h.contains(kind(l)),
        _ => false,
    };
    (hosted, local, same)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rewrite_never_changes_an_answer() {
    let session = services().await;
    session
        .sql(
            "CREATE TABLE t (id INT, a VARCHAR, b VARCHAR, n INT, d VARCHAR) AS VALUES
               (1, 'Ab c', 'y', 1, '2024-01-02T03:04:05'),
               (2, 'x', NULL, 0, 'not a date'),
               (3, NULL, 'Y', -1, NULL),
               (4, '', 'ab', 2, '2023-06-30T00:00:00'),
               (5, ' pad ', 'zz', NULL, 'soon'),
               (6, 'Ab c', 'Ä ö', 65, '2025-12-31T23:59:59'),
               (7, 'x', 'y', 3, ''),
               (8, 'caf', NULL, 1, '2020-02-29T12:00:00')",
        )
        .await
        .unwrap();
    session
        .sql(
            "CREATE TABLE u (k VARCHAR, m INT) AS VALUES
               ('AB C', 1), ('x', 2), (NULL, 3), ('', 0), ('Y', 65), ('2024-01-02T03:04:05', -1)",
        )
        .await
        .unwrap();

    let mut corpus = written();
    let mut generator = Gen(0x5eed_2026_1125);
    corpus.extend((0..GENERATED).map(|_| generator.query()));

    let (mut rewritten, mut guarded, mut failing) = (0, 0, 0);
    let mut differences = Vec::new();
    // requests the services were sent: calls of constants go while planning
    let sent = || {
        ["text", "num"]
            .iter()
            .map(|s| {
                let stats = session.client(s).unwrap().stats();
                stats.requests + stats.failures
            })
            .sum::<u64>()
    };
    for sql in &corpus {
        session.sql("SET rpcop.rewrite = true").await.unwrap();
        let before = sent();
        let explain = answer(&session, &format!("EXPLAIN {sql}")).await;
        let proxies: Vec<String> = explain
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.contains("RpcProxyExec"))
            .collect();
        // a call sent only for the rows its CASE/AND/OR/coalesce takes
        guarded += usize::from(proxies.iter().any(|r| r.contains(" WHEN ")));
        let (hosted, local, same) = both_ways(&session, sql).await;
        rewritten += usize::from(!proxies.is_empty() || sent() > before);
        failing += usize::from(hosted.is_err() && local.is_err());
        if !same {
            differences.push(format!(
                "{sql}\n  through services: {hosted:?}\n  in-process:       {local:?}"
            ));
        }
    }
    println!(
        "{} queries compared ({} written, {GENERATED} generated): {rewritten} sent to services \
         ({guarded} with conditional calls), {failing} failing both ways, {} differences",
        corpus.len(),
        corpus.len() - GENERATED,
        differences.len()
    );
    assert!(
        differences.is_empty(),
        "{} of {} queries answer differently through services:\n{}",
        differences.len(),
        corpus.len(),
        differences.join("\n")
    );
    // the comparison says something only if most queries used services
    assert!(
        rewritten * 10 >= corpus.len() * 7 && guarded * 10 >= corpus.len(),
        "only {rewritten} of {} queries were sent to services, {guarded} with conditional calls",
        corpus.len()
    );
    assert!(failing > 0, "no query fails: the errors are not compared");
}

/// A value of a random table, as SQL.
fn literal(value: Option<&str>) -> String {
    value.map_or_else(
        || "NULL".to_string(),
        |v| format!("'{}'", v.replace('\'', "''")),
    )
}

/// Random tables and random queries of the same grammar (proptest): the
/// answers agree too, and a difference shrinks to a small case.
#[test]
fn random_tables_and_queries_answer_the_same_both_ways() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    let runtime = common::runtime().unwrap();
    let session = runtime.block_on(services());
    let text = || prop::option::of("[a-zA-Z äÖ]{0,5}");
    let date = || {
        prop::option::of(prop::sample::select(vec![
            "2024-01-02T03:04:05",
            "2020-02-29T12:00:00",
            "not a date",
            "",
            "soon",
        ]))
    };
    let t_row = (text(), text(), prop::option::of(-3i32..70), date());
    let u_row = (text(), prop::option::of(-2i32..70));
    let strategy = (
        prop::collection::vec(t_row, 0..10),
        prop::collection::vec(u_row, 0..6),
        any::<u64>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&strategy, |(t, u, seed)| {
        runtime.block_on(async {
            let mut sql = vec![
                "DROP TABLE IF EXISTS t".to_string(),
                "DROP TABLE IF EXISTS u".to_string(),
                "CREATE TABLE t (id INT, a VARCHAR, b VARCHAR, n INT, d VARCHAR)".to_string(),
                "CREATE TABLE u (k VARCHAR, m INT)".to_string(),
            ];
            for (id, (a, b, n, d)) in t.iter().enumerate() {
                let n = n.map_or_else(|| "NULL".to_string(), |n| n.to_string());
                let (a, b, d) = (
                    literal(a.as_deref()),
                    literal(b.as_deref()),
                    literal(d.as_deref()),
                );
                sql.push(format!("INSERT INTO t VALUES ({id}, {a}, {b}, {n}, {d})"));
            }
            for (k, m) in &u {
                let m = m.map_or_else(|| "NULL".to_string(), |m| m.to_string());
                sql.push(format!(
                    "INSERT INTO u VALUES ({}, {m})",
                    literal(k.as_deref())
                ));
            }
            session.sql("SET rpcop.rewrite = false").await.unwrap();
            for statement in &sql {
                session.sql(statement).await.unwrap();
            }
            let query = Gen(seed | 1).query();
            let (hosted, local, same) = both_ways(&session, &query).await;
            if same {
                Ok(())
            } else {
                Err(TestCaseError::fail(format!(
                    "{query}\n  through services: {hosted:?}\n  in-process:       {local:?}"
                )))
            }
        })
    });
    if let Err(failure) = outcome {
        panic!("the rewrite changed an answer: {failure}");
    }
}
