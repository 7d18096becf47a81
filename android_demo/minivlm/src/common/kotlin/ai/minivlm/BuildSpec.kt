package ai.minivlm

import java.io.File

/** The graph names of every build, in pipeline order (python_ref/pipeline.py GRAPH_NAMES). */
val GRAPH_NAMES = listOf("tee_stage1", "tee_stage2", "caption_prefix", "caption_step", "vqa", "match")

/**
 * What the app needs from a build folder beyond the host-step constants (which the native core reads from
 * the same manifest): the target, the graphs' I/O specs and the answer/attribute vocabularies.
 */
data class BuildSpec(
    val target: String,        // "executorch" | "tflite" | "coreml" | "coreai"
    val delegate: String?,
    val precision: String,
    val graphs: Map<String, GraphSpec>,
    val answers: List<String>,
    val attributes: List<String>,
    val weightsFile: String? = null, // an ExecuTorch build's one weights file (.ptd), shared by every graph
) {
    fun graph(name: String): GraphSpec =
        graphs[name] ?: throw MiniVlmException(ErrorKind.BAD_FILE, "the manifest has no graph '$name'")

    companion object {
        /** Reads `manifest.json` and its vocabularies file from `dir`. */
        fun load(dir: File): BuildSpec {
            val manifest = readText(File(dir, "manifest.json"))
            val root = JsonPath(Json.parseObject(manifest, "manifest.json"), "manifest")
            val vocabFile = root.opt("vocabularies_file")?.string ?: "vocabularies.json"
            val vocab = JsonPath(Json.parseObject(readText(File(dir, vocabFile)), vocabFile), vocabFile)
            return parse(root, vocab)
        }

        fun parse(manifest: JsonPath, vocabularies: JsonPath): BuildSpec {
            val graphs = manifest["graphs"]
            val specs = GRAPH_NAMES.associateWith { name ->
                val g = graphs[name]
                GraphSpec(name, g["file"].string, g["inputs"].list.map(::tensorSpec), g["outputs"].list.map(::tensorSpec),
                    g.opt("signature")?.string)
            }
            return BuildSpec(
                target = manifest["target"].string,
                delegate = manifest.opt("delegate")?.string,
                precision = manifest["precision"].string,
                graphs = specs,
                answers = vocabularies["answers"].list.map { it.string },
                attributes = vocabularies["attributes"].list.map { it.string },
                weightsFile = manifest.opt("weights_file")?.string,
            )
        }

        private fun tensorSpec(t: JsonPath): TensorSpec {
            val dtype = DType.of(t["dtype"].string)
            return TensorSpec(
                name = t["name"].string,
                shape = t["shape"].list.map { it.long.also { d -> if (d < 1) throw MiniVlmException(ErrorKind.BAD_FILE, "bad dimension $d") } }.toLongArray(),
                dtype = dtype,
                batchAxis = t.opt("batch_axis")?.int ?: 0,
                runtimeName = t.opt("runtime_name")?.string ?: t["name"].string,
                runtimeDtype = t.opt("runtime_dtype")?.string?.let(DType::of) ?: dtype,
            )
        }

        internal fun readText(file: File): String = try {
            file.readBytes().let { bytes ->
                val decoder = Charsets.UTF_8.newDecoder() // strict: malformed bytes raise, not U+FFFD
                decoder.decode(java.nio.ByteBuffer.wrap(bytes)).toString()
            }
        } catch (e: java.nio.charset.CharacterCodingException) {
            throw MiniVlmException(ErrorKind.BAD_FILE, "${file.path} is not UTF-8")
        } catch (e: java.io.IOException) {
            throw MiniVlmException(ErrorKind.IO_ERROR, "${file.path} cannot be read: ${e.message}")
        }
    }
}
