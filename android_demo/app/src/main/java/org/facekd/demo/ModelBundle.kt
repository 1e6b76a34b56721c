package org.facekd.demo

import android.content.Context
import java.io.FileNotFoundException
import org.facekd.core.ContractException
import org.facekd.core.ModelManifest
import org.facekd.core.Sha256

/** The model and manifest shipped in `assets/`, checked against each other before any use. */
class ModelBundle private constructor(
    val manifest: ModelManifest,
    /** sha256 of the model asset, computed on load (equal to the manifest's). */
    val verifiedSha256: String,
) {
    /** Asset name of the model file (the manifest's `file`). */
    val modelAsset: String get() = manifest.file()

    companion object {
        const val MANIFEST_ASSET = "manifest.json"

        /**
         * Reads `assets/manifest.json`, hashes the model it names and refuses a mismatch.
         * Blocking (hashes a few MB): call off the main thread.
         */
        fun load(context: Context): ModelBundle {
            val manifest = try {
                context.assets.open(MANIFEST_ASSET).use { ModelManifest.read(it, "assets/$MANIFEST_ASSET") }
            } catch (e: FileNotFoundException) {
                throw ContractException(
                    "assets/$MANIFEST_ASSET is missing: copy model.tflite and manifest.json from an export's " +
                        "tflite-fp32 folder into app/src/main/assets and rebuild",
                )
            }
            if (manifest.format() != "tflite") {
                throw ContractException("assets/$MANIFEST_ASSET describes a '${manifest.format()}' model; this app runs tflite")
            }
            val sha256 = try {
                context.assets.open(manifest.file()).use { Sha256.of(it) }
            } catch (e: FileNotFoundException) {
                throw ContractException("assets/${manifest.file()} (named by the manifest) is missing")
            }
            manifest.verifySha256(sha256, "assets/${manifest.file()}")
            return ModelBundle(manifest, sha256)
        }
    }
}
