#!/usr/bin/env node
// KQL oracle: parse and semantically check KQL queries with Microsoft's Kusto parser
// (@kusto/language-service-next) against the table schemas and functions given on stdin.
//
// stdin:  {"schemas":   {"<Table>": [["<column>", "<type>"], ...], ...},
//          "functions": [{"name", "parameters": "(a:string)", "body": "{ ... }", "description"?}],
//          "queries":   [{"id": "...", "kql": "..."}, ...]}
// stdout: {"results": [{"id", "diagnostics": [{"severity", "code", "message",
//                                              "start", "length", "snippet", "source"}]}]}
//
// Only diagnostics of severity Error and Warning are reported. "source" says where one came from:
// "parser" (syntax and binding: unknown names, types, arity), "analyzer" (Kusto's code analyzers,
// KS5xx, e.g. join without kind, deprecated function), "oracle" (empty query, or the parser threw).
// A bad request (unknown column type, broken function declaration, malformed JSON) exits 2, a
// missing Kusto package exits 3, each with a message on stderr.
'use strict';

const fs = require('fs');

function loadKusto() {
  try {
    // The package's minified builds: same code as bridge.js / Kusto.Language.Bridge.js, loads faster.
    require('@kusto/language-service-next/bridge.min.js');
    require('@kusto/language-service-next/Kusto.Language.Bridge.min.js');
  } catch (err) {
    process.stderr.write(
      `check_kql.js: cannot load @kusto/language-service-next (${err.message}).\n` +
        'Run `npm ci` in the repository root.\n'
    );
    process.exit(3);
  }
  return global.Kusto.Language;
}

const K = loadKusto();
const S = K.Symbols;
const REPORTED = new Set([K.DiagnosticSeverity.Error, K.DiagnosticSeverity.Warning]);

function fail(message) {
  process.stderr.write(`check_kql.js: ${message}\n`);
  process.exit(2);
}

/** A table symbol built from columns directly: much faster than parsing a schema string. */
function buildTable(name, columns) {
  if (!Array.isArray(columns) || columns.length === 0) fail(`table ${name}: no columns`);
  const symbols = columns.map((col) => {
    if (!Array.isArray(col) || col.length !== 2) fail(`table ${name}: bad column ${JSON.stringify(col)}`);
    const [colName, colType] = col;
    const type = S.ScalarTypes.GetSymbol(colType);
    if (!type) fail(`table ${name}: column ${colName} has unknown type ${colType}`);
    return new S.ColumnSymbol(colName, type, null, null, null, null);
  });
  return new S.TableSymbol.$ctor4(name, symbols); // (name, ColumnSymbol[])
}

function buildFunction(fn) {
  if (!fn || !fn.name || fn.parameters == null || !fn.body) {
    fail(`bad function declaration ${JSON.stringify(fn)}: needs name, parameters, body`);
  }
  // $ctor16: (name, parameterList, body, description)
  return new S.FunctionSymbol.$ctor16(fn.name, fn.parameters, fn.body, fn.description || '');
}

function toJson(d, kql, source) {
  const start = d.HasLocation ? d.Start : 0;
  const length = d.HasLocation ? d.Length : 0;
  // A zero-length diagnostic ("Expected: )") points between characters: show its surroundings.
  const snippet = length > 0 ? kql.substr(start, Math.min(length, 120)) : kql.substr(Math.max(0, start - 20), 40);
  return { severity: d.Severity, code: d.Code, message: d.Message, start, length, snippet, source };
}

/** Error and Warning diagnostics of one query: parser/binder ones, then the analyzers' (KS5xx). */
function diagnosticsOf(kql, globals) {
  const out = [];
  if (kql.replace(/\/\/.*$/gm, '').trim() === '') {
    out.push({ severity: 'Error', code: 'ORACLE-EMPTY', message: 'query is empty (Kusto accepts that; foxhunt must not)',
      start: 0, length: 0, snippet: '', source: 'oracle' });
    return out;
  }
  const code = K.KustoCode.ParseAndAnalyze(kql, globals);
  const collect = (list, source) => {
    for (let i = 0; i < list.Count; i++) {
      const d = list.getItem(i);
      if (REPORTED.has(d.Severity)) out.push(toJson(d, kql, source));
    }
  };
  collect(code.GetDiagnostics(), 'parser');
  collect(new K.Editor.KustoCodeService.ctor(code).GetAnalyzerDiagnostics(true), 'analyzer');
  return out;
}

/** Check that each declared function's body itself analyses cleanly against the schemas. */
function checkFunctions(functions, globals) {
  for (const fn of functions) {
    const probe = `let __f = ${fn.parameters} ${fn.body};\nprint 1`;
    const diags = diagnosticsOf(probe, globals);
    if (diags.length) fail(`function ${fn.name}: declaration does not analyse: ${JSON.stringify(diags)}`);
  }
}

function main() {
  let request;
  try {
    request = JSON.parse(fs.readFileSync(0, 'utf8'));
  } catch (err) {
    fail(`stdin is not a JSON request: ${err.message}`);
  }
  const schemas = request.schemas || {};
  const functions = request.functions || [];
  const queries = request.queries;
  if (!Array.isArray(queries)) fail('request has no "queries" list');

  const members = Object.entries(schemas).map(([name, cols]) => buildTable(name, cols));
  const tableGlobals = K.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.$ctor1('db', members));
  checkFunctions(functions, tableGlobals);
  for (const fn of functions) members.push(buildFunction(fn));
  const globals = K.GlobalState.Default.WithDatabase(new S.DatabaseSymbol.$ctor1('db', members));

  const results = queries.map((q) => {
    if (!q || typeof q.id !== 'string' || typeof q.kql !== 'string') {
      fail(`bad query entry ${JSON.stringify(q)}: needs string id and kql`);
    }
    let diagnostics;
    try {
      diagnostics = diagnosticsOf(q.kql, globals);
    } catch (err) {
      diagnostics = [{ severity: 'Error', code: 'ORACLE', message: `parser crashed: ${err.message}`,
        start: 0, length: 0, snippet: '', source: 'oracle' }];
    }
    return { id: q.id, diagnostics };
  });
  process.stdout.write(JSON.stringify({ results }));
}

main();
