// Validates KEDA ScaledObjects for `cargo xtask chart check` against KEDA's own ScaledObject
// schema, as generated from KEDA's CRDs into npm's `@kubernetes-models/keda` (which the check
// installs into target/tools; its directory is $KEDA_MODELS).
//
// Reads a JSON array of objects on stdin; writes a JSON array with, per object, null when it
// is valid and the validation message otherwise.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const models = process.env.KEDA_MODELS;
if (!models) {
  throw new Error("KEDA_MODELS must name the install directory of @kubernetes-models/keda");
}
const file = join(models, "node_modules/@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js");
const { ScaledObject } = await import(pathToFileURL(file).href);

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = objects.map((object) => {
  try {
    new ScaledObject(object).validate();
    return null;
  } catch (error) {
    return String(error.message ?? error);
  }
});
process.stdout.write(JSON.stringify(results));
