package org.facekd.demo

import android.os.Bundle
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import java.util.Locale
import org.facekd.core.MatchPolicy
import org.facekd.core.ModelManifest

/**
 * What model is running: manifest fields, its operating points and the matching policy, the sha256
 * verified just now, accelerator, gallery size.
 */
class ModelInfoActivity : AppCompatActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_model_info)
        val text = findViewById<TextView>(R.id.info_text)
        text.text = getString(R.string.loading_model)
        val accelerator = intent.getStringExtra(EXTRA_ACCELERATOR) ?: "-"
        val fallback = intent.getStringExtra(EXTRA_FALLBACK)
        val people = intent.getIntExtra(EXTRA_PEOPLE, 0)
        val templates = intent.getIntExtra(EXTRA_TEMPLATES, 0)
        Thread {
            val report = try {
                describe(ModelBundle.load(this), accelerator, fallback, people, templates)
            } catch (e: Exception) {
                getString(R.string.model_error, e.message)
            }
            runOnUiThread { text.text = report }
        }.start()
    }

    private fun describe(
        bundle: ModelBundle,
        accelerator: String,
        fallback: String?,
        people: Int,
        templates: Int,
    ): String {
        val m: ModelManifest = bundle.manifest
        val p = m.preprocess()
        val threshold = if (m.hasThreshold()) String.format(Locale.ROOT, "%.4f", m.threshold()) else "missing"
        // the same policy RecognitionPipeline matches with
        val (matching, warning) = try {
            val policy = MatchPolicy.identification(m, RecognitionPipeline.IDENTIFICATION_FPIR)
            policy.describe(templates) to policy.warning()
        } catch (e: IllegalArgumentException) {
            "unusable: ${e.message}" to null
        }
        return buildString {
            appendLine("model        assets/${m.file()}")
            appendLine("sha256       ${bundle.verifiedSha256}")
            appendLine("             verified against manifest.json at load")
            appendLine("format       ${m.format()} ${m.precision()}")
            appendLine("input        ${m.inputName()} ${m.inputShape().contentToString()} ${m.inputLayout()} float32")
            appendLine("output       ${m.outputName()} ${m.outputShape().contentToString()}")
            appendLine("preprocess   ${p.size()}x${p.size()} ${p.channelOrder()} mean ${p.mean().contentToString()}")
            appendLine("             std ${p.std().contentToString()} bilinear (half-pixel)")
            appendLine("embedding    ${m.embeddingSize()}-d, L2-normalised")
            appendLine("threshold    $threshold (best accuracy on balanced pairs; cosine >= threshold: same person)")
            if (m.hasOperatingPoints()) {
                val op = m.operatingPoints()
                appendLine("op. points   ${op.summary()}")
                if (op.source().isNotEmpty()) appendLine("             ${op.source()}")
                op.points().forEach { appendLine("             $it") }
            } else {
                appendLine("op. points   none (exported before they existed)")
            }
            appendLine("matching     $matching")
            warning?.let { appendLine("warning      $it") }
            appendLine("status       ${m.status()}${if (m.reason().isEmpty()) "" else " (${m.reason()})"}")
            appendLine("parity       ${m.parity()}")
            appendLine("accelerator  $accelerator${fallback?.let { " (GPU unavailable: $it)" } ?: ""}")
            appendLine("enrolled     $people people, $templates templates")
        }
    }

    companion object {
        const val EXTRA_ACCELERATOR = "accelerator"
        const val EXTRA_FALLBACK = "fallback"
        const val EXTRA_PEOPLE = "people"
        const val EXTRA_TEMPLATES = "templates"
    }
}
