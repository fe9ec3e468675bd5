// pushd.d.ts must compile, and an application's use of it must
// type-check (tsc --strict); a wrong use must not (the check has teeth).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(dir, "node_modules", "typescript", "bin", "tsc");
const flags = ["--noEmit", "--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext"];

async function check(file) {
  try {
    await promisify(execFile)(process.execPath, [tsc, ...flags, file], { cwd: dir });
    return "";
  } catch (e) {
    return String(e.stdout || e.message);
  }
}

test("pushd.d.ts type-checks an application's use of the client", async () => {
  assert.equal(await check("test/types-usage.ts"), "");
});

test("a wrong use fails to type-check (control)", async () => {
  const tmp = mkdtempSync(join(dir, "test", ".tmp-"));
  try {
    const bad = join(tmp, "bad.ts");
    writeFileSync(bad, `import { connect } from "../../pushd.js";\nconnect("ws://x").subscribe("a", { since: "0" });\n`);
    const out = await check(bad);
    assert.match(out, /bad\.ts\(2,\d+\): error TS2322: Type 'string' is not assignable to type 'number'/, out);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
