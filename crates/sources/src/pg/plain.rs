//! Reading `pg_dump` plain-format SQL: header versions, exact per-table row counts (the lines
//! of each `COPY ... FROM stdin;` block), and a filter that keeps only selected tables'
//! entries for single-table restores.
//!
//! pg_dump writes one TOC entry per object, each introduced by a comment header
//! `-- Name: t; Type: TABLE; Schema: public; Owner: postgres` (data entries say
//! `-- Data for Name: ...`). In COPY text format every row is exactly one line (newlines in
//! values are escaped), terminated by `\.`, so counting lines between those markers gives the
//! exact row count *of the dump itself*, i.e. inside pg_dump's own snapshot.

use std::collections::HashSet;
use std::io::{self, BufRead, Read};

use crate::stream::{LineSplitter, Observer};
use crate::TableRows;

/// Parse a possibly-quoted, possibly-qualified identifier at the start of `s`. Returns the
/// parts and the rest of the string.
pub(crate) fn parse_qualified(s: &str) -> (Vec<String>, &str) {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let (part, after) = if let Some(q) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices().peekable();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if matches!(chars.peek(), Some((_, '"'))) {
                        out.push('"');
                        chars.next();
                    } else {
                        end = i + 1;
                        break;
                    }
                } else {
                    out.push(c);
                }
            }
            (out, &q[end..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        parts.push(part);
        match after.strip_prefix('.') {
            Some(r) => rest = r,
            None => return (parts, after),
        }
    }
}

/// Quote an identifier for SQL.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote a string literal (standard_conforming_strings on).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// How pg_dump prints an identifier: bare when it is a plain lower-case name, else quoted.
/// (Keywords are also quoted by pg_dump; callers match both forms.)
fn dump_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        s.to_string()
    } else {
        quote_ident(s)
    }
}

/// Major version from a version string (`15.20 (Debian ...)` → 15, `9.6.24` → 9,
/// `17beta1` → 17).
pub(crate) fn major_of(version: &str) -> Option<u32> {
    let digits: String = version
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Watches a plain dump stream go by.
pub(crate) struct PlainObserver {
    lines: LineSplitter,
    state: PlainState,
}

#[derive(Default)]
pub(crate) struct PlainState {
    copy: Option<TableRows>,
    /// Tables in dump order with their COPY row counts.
    pub(crate) tables: Vec<TableRows>,
    /// `-- Dumped from database version X`.
    pub(crate) dumped_from: Option<String>,
    /// `-- Dumped by pg_dump version X`.
    pub(crate) dumped_by: Option<String>,
    /// Saw `-- PostgreSQL database dump complete`.
    pub(crate) complete: bool,
}

impl PlainObserver {
    pub(crate) fn new() -> Self {
        PlainObserver {
            lines: LineSplitter::new(64 * 1024),
            state: PlainState::default(),
        }
    }

    pub(crate) fn into_state(self) -> PlainState {
        self.state
    }
}

impl Observer for PlainObserver {
    fn observe(&mut self, chunk: &[u8]) {
        let state = &mut self.state;
        self.lines.feed(chunk, |line, _len| state.on_line(line));
    }
}

/// `COPY public.t (a, b) FROM stdin;` → (schema, table).
fn copy_target(line: &str) -> Option<(Option<String>, String)> {
    let rest = line.strip_prefix("COPY ")?;
    if !line.ends_with(" FROM stdin;") {
        return None;
    }
    let (mut parts, _) = parse_qualified(rest);
    let name = parts.pop()?;
    Some((parts.pop(), name))
}

impl PlainState {
    fn on_line(&mut self, line: &[u8]) {
        if let Some(t) = self.copy.as_mut() {
            if line == b"\\." {
                let done = self.copy.take().expect("in copy");
                self.tables.push(done);
            } else {
                t.rows += 1;
            }
            return;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return;
        };
        if let Some((schema, name)) = copy_target(text) {
            self.copy = Some(TableRows {
                schema,
                name,
                rows: 0,
            });
        } else if let Some(v) = text.strip_prefix("-- Dumped from database version ") {
            // The header's, the first: a later line like it is the database's own text
            // (a function body, `--inserts` data).
            self.dumped_from.get_or_insert_with(|| v.trim().to_string());
        } else if let Some(v) = text.strip_prefix("-- Dumped by pg_dump version ") {
            self.dumped_by.get_or_insert_with(|| v.trim().to_string());
        } else if text == "-- PostgreSQL database dump complete" {
            self.complete = true;
        }
    }
}

/// Parse the header of a dump (its first kilobytes) for the two version lines.
pub(crate) fn header_versions(head: &[u8]) -> (Option<String>, Option<String>) {
    let mut state = PlainState::default();
    for line in head.split(|&b| b == b'\n') {
        if line.starts_with(b"COPY ") {
            break;
        }
        state.on_line(line);
    }
    (state.dumped_from, state.dumped_by)
}

/// A TOC entry header line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) schema: String,
}

pub(crate) fn parse_entry_header(line: &str) -> Option<EntryHeader> {
    let rest = line
        .strip_prefix("-- Name: ")
        .or_else(|| line.strip_prefix("-- Data for Name: "))?;
    let (name, rest) = rest.split_once("; Type: ")?;
    let (kind, rest) = rest.split_once("; Schema: ")?;
    let schema = rest.split_once("; ").map_or(rest, |(s, _)| s);
    Some(EntryHeader {
        name: name.to_string(),
        kind: kind.to_string(),
        schema: schema.to_string(),
    })
}

/// One table picked for a single-table restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TablePick {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// Already exists in the target: only its data is replaced (TRUNCATE ONLY + COPY).
    /// Otherwise its definition, sequences, defaults, constraints, indexes, triggers,
    /// comments and grants are created too.
    pub(crate) exists: bool,
}

impl TablePick {
    fn qualified_forms(&self) -> [String; 2] {
        [
            format!("{}.{}", dump_ident(&self.schema), dump_ident(&self.name)),
            format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name)),
        ]
    }

    pub(crate) fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Keep,
    Drop,
    /// Decide from the body (index, sequence, ...): buffer it until the next header.
    Pending,
}

/// The transaction-local setting that carries the foreign keys dropped by
/// [`foreign_keys_prologue`] to [`foreign_keys_epilogue`].
const FK_SETTING: &str = "lifeboat.restore_fks";

/// SQL run in a single-table restore over existing tables, after the dump's preamble and
/// before the first `TRUNCATE ONLY`: the picked tables are locked, then every foreign key that
/// references one of them from another table (picked or not) is recorded, with its definition
/// and comment, and dropped, so that their `TRUNCATE ONLY` is allowed; without this PostgreSQL
/// refuses to truncate a referenced table. [`foreign_keys_epilogue`] adds them back after the
/// data, which checks the referencing rows against the restored ones. Both run inside the
/// restore's one transaction: a failure restores the constraints with everything else. `None`
/// when no picked table exists yet.
///
/// A key of a table onto itself stays (`TRUNCATE` allows it). From PostgreSQL 11 a partitioned
/// table's key has a clone per partition (`conparentid`), and from 12 a key that references a
/// partitioned table has one per referenced partition, which is what a pick is (the dump has a
/// data block per leaf): each match is followed up to its top-level constraint, which is what
/// is dropped (its clones go with it) and added back (without `ONLY`, so it clones again).
/// Definitions are printed with an empty `search_path`, so every name in them is
/// schema-qualified.
pub(crate) fn foreign_keys_prologue(picks: &[TablePick], server_major: u32) -> Option<String> {
    let existing: Vec<&TablePick> = picks.iter().filter(|p| p.exists).collect();
    if existing.is_empty() {
        return None;
    }
    let names = existing
        .iter()
        .map(|p| quote_literal(&p.sql_name()))
        .collect::<Vec<_>>()
        .join(", ");
    let locks = existing
        .iter()
        .map(|p| p.sql_name())
        .collect::<Vec<_>>()
        .join(", ");
    let matches = format!(
        "SELECT c.oid{parent} FROM pg_catalog.pg_constraint c
              WHERE c.contype = 'f' AND c.conrelid <> c.confrelid
                AND c.confrelid IN (SELECT pg_catalog.to_regclass(x)
                                      FROM pg_catalog.unnest(ARRAY[{names}]::text[]) x)",
        parent = if server_major >= 11 {
            ", c.conparentid"
        } else {
            ""
        },
    );
    let top = if server_major >= 11 {
        format!(
            "WITH RECURSIVE hit AS ({matches}
             UNION SELECT p.oid, p.conparentid FROM pg_catalog.pg_constraint p
                     JOIN hit ON p.oid = hit.conparentid)
           SELECT oid FROM hit WHERE conparentid = 0"
        )
    } else {
        matches
    };
    Some(format!(
        "DO $lb$ DECLARE r record; fks jsonb := '[]'; BEGIN
  PERFORM pg_catalog.set_config('search_path', '', true);
  LOCK TABLE ONLY {locks} IN ACCESS EXCLUSIVE MODE;
  FOR r IN SELECT n.nspname AS sch, t.relname AS tbl, c.conname AS con,
                  pg_catalog.pg_get_constraintdef(c.oid) AS def,
                  pg_catalog.obj_description(c.oid, 'pg_constraint') AS com
             FROM pg_catalog.pg_constraint c
             JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
            WHERE c.oid IN ({top})
            ORDER BY 1, 2, 3
  LOOP
    fks := fks || pg_catalog.jsonb_build_object('schema', r.sch, 'table', r.tbl, 'name', r.con, 'def', r.def, 'comment', r.com);
    EXECUTE pg_catalog.format('ALTER TABLE %I.%I DROP CONSTRAINT %I', r.sch, r.tbl, r.con);
  END LOOP;
  PERFORM pg_catalog.set_config('{FK_SETTING}', fks::text, true);
END $lb$;\n"
    ))
}

/// SQL run after the data of a single-table restore: adds back, under their own names, the
/// foreign keys [`foreign_keys_prologue`] dropped (`NOT VALID` and deferrability kept by their
/// definitions), with their comments. Adding a valid foreign key checks every existing row; a
/// row that references a key the restored data no longer has fails the restore with a
/// `lifeboat: ` error that names the table, the constraint and the key (PostgreSQL's detail).
/// Deferred checks queued by the data (a restored table's own `DEFERRABLE INITIALLY DEFERRED`
/// keys) run first: `ALTER TABLE` refuses a table with pending trigger events.
pub(crate) fn foreign_keys_epilogue() -> String {
    format!(
        "SET CONSTRAINTS ALL IMMEDIATE;
DO $lb$ DECLARE r jsonb; detail text; BEGIN
  FOR r IN SELECT * FROM pg_catalog.jsonb_array_elements(
             coalesce(nullif(pg_catalog.current_setting('{FK_SETTING}', true), ''), '[]')::jsonb)
  LOOP
    BEGIN
      EXECUTE pg_catalog.format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s',
                                r->>'schema', r->>'table', r->>'name', r->>'def');
    EXCEPTION WHEN foreign_key_violation THEN
      GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
      RAISE EXCEPTION 'lifeboat: %.% has rows that reference rows the restored data does not have (foreign key %): %',
        r->>'schema', r->>'table', r->>'name', detail
        USING HINT = 'restore that table too (--table), or fix its rows first';
    END;
    IF r->>'comment' IS NOT NULL THEN
      EXECUTE pg_catalog.format('COMMENT ON CONSTRAINT %I ON %I.%I IS %L',
                                r->>'name', r->>'schema', r->>'table', r->>'comment');
    END IF;
  END LOOP;
END $lb$;\n"
    )
}

/// Keeps the preamble (SET lines), the selected tables' entries and nothing else, injecting
/// `TRUNCATE ONLY` before the data of tables that already exist, then appends `trailer`.
/// When a picked table exists, [`foreign_keys_prologue`] comes before the first `TRUNCATE`
/// (after the preamble's settings: `standard_conforming_strings`, `client_encoding`, the
/// timeouts) and the trailer starts with [`foreign_keys_epilogue`].
pub(crate) struct TableFilter<R> {
    input: R,
    picks: Vec<TablePick>,
    /// [`foreign_keys_prologue`], until the first `TRUNCATE` takes it.
    prologue: Option<Vec<u8>>,
    trailer: Option<Vec<u8>>,
    out: Vec<u8>,
    pos: usize,
    in_copy: bool,
    keep_copy: bool,
    decision: Decision,
    current: Option<EntryHeader>,
    pending: Vec<u8>,
    owned_sequences: HashSet<(String, String)>,
    /// Sequences seen but not yet known to belong to a picked table: (schema, name) → text.
    parked_sequences: Vec<((String, String), Vec<u8>)>,
    /// Picks whose data block was found.
    pub(crate) data_found: HashSet<usize>,
    line: Vec<u8>,
    eof: bool,
}

impl<R: BufRead> TableFilter<R> {
    pub(crate) fn new(
        input: R,
        picks: Vec<TablePick>,
        server_major: u32,
        trailer: Vec<u8>,
    ) -> Self {
        let prologue = foreign_keys_prologue(&picks, server_major).map(String::into_bytes);
        let trailer = match prologue {
            Some(_) => [foreign_keys_epilogue().into_bytes(), trailer].concat(),
            None => trailer,
        };
        TableFilter {
            input,
            picks,
            prologue,
            trailer: Some(trailer),
            out: Vec::new(),
            pos: 0,
            in_copy: false,
            keep_copy: false,
            decision: Decision::Keep,
            current: None,
            pending: Vec::new(),
            owned_sequences: HashSet::new(),
            parked_sequences: Vec::new(),
            data_found: HashSet::new(),
            line: Vec::new(),
            eof: false,
        }
    }

    fn pick_index(&self, schema: &str, name: &str) -> Option<usize> {
        self.picks
            .iter()
            .position(|p| p.schema == schema && p.name == name)
    }

    fn decide(&mut self, h: &EntryHeader) -> Decision {
        let new_picks: Vec<&TablePick> = self.picks.iter().filter(|p| !p.exists).collect();
        match h.kind.as_str() {
            "TABLE DATA" => {
                if self.pick_index(&h.schema, &h.name).is_some() {
                    Decision::Keep
                } else {
                    Decision::Drop
                }
            }
            "TABLE" => {
                if new_picks
                    .iter()
                    .any(|p| p.schema == h.schema && p.name == h.name)
                {
                    Decision::Keep
                } else {
                    Decision::Drop
                }
            }
            "CONSTRAINT" | "FK CONSTRAINT" | "TRIGGER" | "DEFAULT" | "POLICY" | "RULE" => {
                let hit = new_picks
                    .iter()
                    .any(|p| p.schema == h.schema && h.name.starts_with(&format!("{} ", p.name)));
                if hit {
                    Decision::Keep
                } else {
                    Decision::Drop
                }
            }
            "COMMENT" | "ACL" => {
                let hit = new_picks.iter().any(|p| {
                    p.schema == h.schema
                        && (h.name == format!("TABLE {}", p.name)
                            || h.name.starts_with(&format!("COLUMN {}.", p.name)))
                });
                if hit {
                    Decision::Keep
                } else {
                    Decision::Drop
                }
            }
            "SEQUENCE SET" => {
                if self
                    .owned_sequences
                    .contains(&(h.schema.clone(), h.name.clone()))
                {
                    Decision::Keep
                } else {
                    Decision::Drop
                }
            }
            "INDEX" | "SEQUENCE" | "SEQUENCE OWNED BY" if !new_picks.is_empty() => {
                Decision::Pending
            }
            _ => Decision::Drop,
        }
    }

    /// Decide a buffered entry from its text.
    fn settle_pending(&mut self) {
        let Some(h) = self.current.take() else {
            self.pending.clear();
            return;
        };
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        let new_picks: Vec<TablePick> = self.picks.iter().filter(|p| !p.exists).cloned().collect();
        let refers = |prefixes: &[&str]| {
            new_picks.iter().any(|p| {
                p.qualified_forms().iter().any(|q| {
                    prefixes
                        .iter()
                        .any(|pre| text.contains(&format!("{pre}{q} ")))
                        || prefixes
                            .iter()
                            .any(|pre| text.contains(&format!("{pre}{q}.")))
                })
            })
        };
        let key = (h.schema.clone(), h.name.clone());
        match h.kind.as_str() {
            "INDEX" if refers(&[" ON ", " ON ONLY "]) => {
                self.out.append(&mut self.pending);
            }
            "SEQUENCE" => {
                if refers(&["ALTER TABLE ", "ALTER TABLE ONLY "]) {
                    // Identity column sequence: belongs to the table.
                    self.owned_sequences.insert(key);
                    self.out.append(&mut self.pending);
                } else {
                    let text = std::mem::take(&mut self.pending);
                    self.parked_sequences.push((key, text));
                }
            }
            "SEQUENCE OWNED BY" if refers(&["OWNED BY "]) => {
                if let Some(i) = self.parked_sequences.iter().position(|(k, _)| *k == key) {
                    let (_, mut seq) = self.parked_sequences.remove(i);
                    self.out.append(&mut seq);
                }
                self.owned_sequences.insert(key);
                self.out.append(&mut self.pending);
            }
            _ => {}
        }
        self.pending.clear();
    }

    fn process_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        if self.in_copy {
            if self.keep_copy {
                self.out.extend_from_slice(&line);
            }
            if body == b"\\." {
                self.in_copy = false;
            }
            self.line = line;
            return;
        }
        let text = String::from_utf8_lossy(body);
        if text.starts_with("\\restrict ") || text.starts_with("\\unrestrict ") {
            self.out.extend_from_slice(&line);
        } else if let Some(h) = parse_entry_header(&text) {
            if self.decision == Decision::Pending {
                self.settle_pending();
            }
            self.decision = self.decide(&h);
            self.current = Some(h);
        } else if let Some((schema, name)) = copy_target(&text) {
            let idx = self.pick_index(schema.as_deref().unwrap_or("public"), &name);
            self.in_copy = true;
            self.keep_copy = self.decision == Decision::Keep && idx.is_some();
            if let (true, Some(i)) = (self.keep_copy, idx) {
                self.data_found.insert(i);
                if self.picks[i].exists {
                    if let Some(p) = self.prologue.take() {
                        self.out.extend_from_slice(&p);
                    }
                    let t = format!("TRUNCATE ONLY {};\n", self.picks[i].sql_name());
                    self.out.extend_from_slice(t.as_bytes());
                }
                self.out.extend_from_slice(&line);
            }
        } else {
            match self.decision {
                Decision::Keep => self.out.extend_from_slice(&line),
                Decision::Pending => self.pending.extend_from_slice(&line),
                Decision::Drop => {}
            }
        }
        self.line = line;
    }

    fn fill(&mut self) -> io::Result<()> {
        while self.pos >= self.out.len() && !self.eof {
            self.out.clear();
            self.pos = 0;
            self.line.clear();
            let n = self.input.read_until(b'\n', &mut self.line)?;
            if n == 0 {
                self.eof = true;
                if self.decision == Decision::Pending {
                    self.settle_pending();
                }
                if let Some(t) = self.trailer.take() {
                    self.out.extend_from_slice(&t);
                }
            } else {
                self.process_line();
            }
        }
        Ok(())
    }
}

impl<R: BufRead> Read for TableFilter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill()?;
        let avail = &self.out[self.pos..];
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n\
-- Dumped from database version 15.18\n-- Dumped by pg_dump version 15.20 (Debian)\n\n\
SET statement_timeout = 0;\n\n\
--\n-- Name: a; Type: TABLE; Schema: public; Owner: postgres\n--\n\nCREATE TABLE public.a (\n    id integer NOT NULL\n);\n\n\
--\n-- Name: a_id_seq; Type: SEQUENCE; Schema: public; Owner: postgres\n--\n\nCREATE SEQUENCE public.a_id_seq;\n\n\
--\n-- Name: a_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: postgres\n--\n\nALTER SEQUENCE public.a_id_seq OWNED BY public.a.id;\n\n\
--\n-- Name: b; Type: TABLE; Schema: public; Owner: postgres\n--\n\nCREATE TABLE public.b (x text);\n\n\
--\n-- Data for Name: a; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\nCOPY public.a (id) FROM stdin;\n1\n2\n\\.\n\n\
--\n-- Data for Name: b; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\nCOPY public.b (x) FROM stdin;\n-- Name: a; Type: TABLE; Schema: public; Owner: x\n\\.\n\n\
--\n-- Name: a_id_seq; Type: SEQUENCE SET; Schema: public; Owner: postgres\n--\n\nSELECT pg_catalog.setval('public.a_id_seq', 2, true);\n\n\
--\n-- Name: a a_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres\n--\n\nALTER TABLE ONLY public.a ADD CONSTRAINT a_pkey PRIMARY KEY (id);\n\n\
--\n-- Name: b_x; Type: INDEX; Schema: public; Owner: postgres\n--\n\nCREATE INDEX b_x ON public.b USING btree (x);\n\n\
--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n";

    #[test]
    fn versions_come_from_the_header_not_from_a_look_alike_line_later() {
        // A function body (outside COPY) holding the header's own words.
        let body = "CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $$\n\
-- Dumped by pg_dump version 99.0\n-- Dumped from database version 99.0\nSELECT 'x'$$;\n\n";
        let dump = DUMP.replacen("SET statement_timeout = 0;\n", body, 1);
        assert!(dump.contains("version 99.0"));
        let mut o = PlainObserver::new();
        o.observe(dump.as_bytes());
        let s = o.into_state();
        assert_eq!(s.dumped_by.as_deref(), Some("15.20 (Debian)"));
        assert_eq!(s.dumped_from.as_deref(), Some("15.18"));
        assert_eq!(
            header_versions(dump.as_bytes()),
            (
                Some("15.18".to_string()),
                Some("15.20 (Debian)".to_string())
            )
        );
    }

    #[test]
    fn observer_counts_copy_rows_and_reads_versions() {
        let mut o = PlainObserver::new();
        for chunk in DUMP.as_bytes().chunks(7) {
            o.observe(chunk);
        }
        let s = o.into_state();
        assert_eq!(s.dumped_by.as_deref(), Some("15.20 (Debian)"));
        assert_eq!(s.dumped_from.as_deref(), Some("15.18"));
        assert!(s.complete);
        let counts: Vec<_> = s.tables.iter().map(|t| (t.qualified(), t.rows)).collect();
        assert_eq!(
            counts,
            vec![("public.a".to_string(), 2), ("public.b".to_string(), 1)]
        );
    }

    #[test]
    fn parses_quoted_names() {
        assert_eq!(
            copy_target("COPY \"My Schema\".\"t\"\"q\" (a) FROM stdin;"),
            Some((Some("My Schema".into()), "t\"q".into()))
        );
        assert_eq!(major_of("15.20 (Debian 15.20-0+deb12u1)"), Some(15));
        assert_eq!(major_of("9.6.24"), Some(9));
    }

    fn filter(picks: Vec<TablePick>) -> String {
        let mut f = TableFilter::new(DUMP.as_bytes(), picks, 15, b"-- trailer\n".to_vec());
        let mut out = String::new();
        f.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn filter_for_existing_table_keeps_only_its_data() {
        let out = filter(vec![TablePick {
            schema: "public".into(),
            name: "a".into(),
            exists: true,
        }]);
        assert!(out.contains("SET statement_timeout = 0;"));
        assert!(out.contains("\\restrict abc") && out.contains("\\unrestrict abc"));
        assert!(out.contains(
            "TRUNCATE ONLY \"public\".\"a\";\nCOPY public.a (id) FROM stdin;\n1\n2\n\\.\n"
        ));
        assert!(!out.contains("CREATE TABLE"));
        assert!(!out.contains("public.b"));
        assert!(!out.contains("setval"));
        assert!(out.ends_with("-- trailer\n"));
        // Foreign keys that reference it are dropped first and added back before the
        // caller's trailer (row checks), all in the restore's transaction.
        let settings = out.find("SET statement_timeout = 0;").unwrap();
        let prologue = out.find("DROP CONSTRAINT").unwrap();
        let truncate = out.find("TRUNCATE ONLY").unwrap();
        let epilogue = out.find("ADD CONSTRAINT").unwrap();
        assert!(settings < prologue && prologue < truncate && truncate < epilogue);
        assert!(out.contains("ARRAY['\"public\".\"a\"']::text[]"));
        assert!(out.contains("LOCK TABLE ONLY \"public\".\"a\" IN ACCESS EXCLUSIVE MODE"));
        assert!(out.contains("WITH RECURSIVE"));
    }

    #[test]
    fn foreign_keys_are_dropped_only_for_existing_tables_and_by_version() {
        let a = TablePick {
            schema: "public".into(),
            name: "a".into(),
            exists: true,
        };
        let before_partitions = foreign_keys_prologue(std::slice::from_ref(&a), 10).unwrap();
        assert!(!before_partitions.contains("conparentid"));
        assert!(foreign_keys_prologue(std::slice::from_ref(&a), 11)
            .unwrap()
            .contains("conparentid"));
        let new = TablePick { exists: false, ..a };
        assert!(foreign_keys_prologue(&[new], 15).is_none());
    }

    #[test]
    fn filter_for_missing_table_recreates_definition() {
        let out = filter(vec![TablePick {
            schema: "public".into(),
            name: "a".into(),
            exists: false,
        }]);
        assert!(out.contains("CREATE TABLE public.a"));
        assert!(out.contains("CREATE SEQUENCE public.a_id_seq;"));
        assert!(out.contains("OWNED BY public.a.id"));
        assert!(out.contains("setval('public.a_id_seq'"));
        assert!(out.contains("a_pkey PRIMARY KEY"));
        assert!(!out.contains("TRUNCATE"));
        assert!(
            !out.contains("DROP CONSTRAINT"),
            "nothing references a new table"
        );
        assert!(!out.contains("CREATE TABLE public.b"));
        assert!(!out.contains("b_x"));
        let out = filter(vec![TablePick {
            schema: "public".into(),
            name: "b".into(),
            exists: false,
        }]);
        assert!(out.contains("CREATE INDEX b_x ON public.b"));
        assert!(
            out.contains("-- Name: a; Type: TABLE; Schema: public; Owner: x\n"),
            "data kept"
        );
        assert!(!out.contains("a_id_seq"));
    }
}
