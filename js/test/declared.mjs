// What the .d.ts files declare and what the JavaScript accepts, read with the
// TypeScript compiler's parser (no type checking here: tsc --noEmit does that).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
export const CLIENT_SOURCE = here("../../fanout/static/fanout.js");

function parse(path) {
  return ts.createSourceFile(path, readFileSync(path, "utf8"), ts.ScriptTarget.Latest, true);
}

function walk(node, visit) {
  visit(node);
  ts.forEachChild(node, (child) => walk(child, visit));
}

const nameOf = (member) => member.name?.getText();

/** Member names of an interface or class declared in a .d.ts (inherited ones not included). */
export function declaredMembers(dts, typeName) {
  let found = null;
  walk(parse(here(dts)), (node) => {
    if ((ts.isInterfaceDeclaration(node) || ts.isClassDeclaration(node)) && node.name?.text === typeName) {
      found = node.members.map(nameOf).filter((n) => n && n !== "constructor");
    }
  });
  if (!found) throw new Error(`${typeName} is not declared in ${dts}`);
  return new Set(found);
}

/** Exported values (not types) of a .d.ts. */
export function declaredValues(dts) {
  const names = new Set();
  walk(parse(here(dts)), (node) => {
    const exported = node.modifiers?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
    if (!exported) return;
    if (ts.isVariableStatement(node)) for (const d of node.declarationList.declarations) names.add(d.name.getText());
    else if (ts.isClassDeclaration(node) || ts.isFunctionDeclaration(node)) names.add(node.name.text);
  });
  return names;
}

/** The options fanout.js reads: the keys of DEFAULTS and every `options.x` it looks at. */
export function clientOptions() {
  const names = new Set();
  walk(parse(CLIENT_SOURCE), (node) => {
    if (ts.isVariableDeclaration(node) && node.name.getText() === "DEFAULTS") {
      for (const p of node.initializer.properties) names.add(nameOf(p));
    }
    if (ts.isPropertyAccessExpression(node) && node.expression.getText() === "options") {
      names.add(node.name.text);
    }
  });
  return names;
}

/** The options useFanout destructures (its own, besides those it passes to the client). */
export function hookOptions() {
  const names = new Set();
  walk(parse(here("../react.js")), (node) => {
    if (ts.isVariableDeclaration(node) && ts.isObjectBindingPattern(node.name) && node.initializer?.getText() === "options") {
      for (const element of node.name.elements) if (!element.dotDotDotToken) names.add(element.name.getText());
    }
  });
  return names;
}
