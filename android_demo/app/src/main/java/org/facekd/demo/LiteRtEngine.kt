package org.facekd.demo

import android.content.Context
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import org.facekd.core.EmbeddingEngine

/**
 * LiteRT CompiledModel behind the core's [EmbeddingEngine]: the GPU if asked for and available,
 * otherwise the CPU (XNNPACK). Not thread-safe: use it from one thread.
 */
class LiteRtEngine private constructor(
    private val model: CompiledModel,
    /** The accelerator actually in use. */
    val accelerator: Accelerator,
    /** Why the GPU was not used although asked for, or null. */
    val fallbackReason: String?,
) : EmbeddingEngine {
    private val inputBuffers: List<TensorBuffer> = model.createInputBuffers()
    private val outputBuffers: List<TensorBuffer> = model.createOutputBuffers()

    override fun embed(input: FloatArray): FloatArray {
        inputBuffers[0].writeFloat(input)
        model.run(inputBuffers, outputBuffers)
        return outputBuffers[0].readFloat()
    }

    override fun close() {
        inputBuffers.forEach { it.close() }
        outputBuffers.forEach { it.close() }
        model.close()
    }

    companion object {
        /** Compiles the model asset for [preferred], falling back from GPU to CPU. */
        fun create(context: Context, modelAsset: String, preferred: Accelerator): LiteRtEngine {
            var fallbackReason: String? = null
            if (preferred == Accelerator.GPU) {
                try {
                    val gpu = CompiledModel.create(context.assets, modelAsset, CompiledModel.Options(Accelerator.GPU), null)
                    return LiteRtEngine(gpu, Accelerator.GPU, null)
                } catch (e: Exception) {
                    fallbackReason = e.message ?: e.javaClass.simpleName
                }
            }
            val cpu = CompiledModel.create(context.assets, modelAsset, CompiledModel.Options(Accelerator.CPU), null)
            return LiteRtEngine(cpu, Accelerator.CPU, fallbackReason)
        }
    }
}
