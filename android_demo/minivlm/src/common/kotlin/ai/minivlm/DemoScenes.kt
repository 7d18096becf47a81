package ai.minivlm

/** A bundled demo scene: its PNG (relative to the scenes folder), reference caption and questions with answers. */
class DemoScene(val file: String, val caption: String, val questions: List<Pair<String, String>>)

/**
 * The demo scenes' index (`scenes.json` beside the PNGs, written by scripts/make_demo_scenes.py):
 * `{"scenes": [{"file", "caption", "questions": [{"question", "answer"}]}]}`.
 */
object DemoScenes {
    fun parse(text: String): List<DemoScene> {
        val root = JsonPath(Json.parseObject(text, "scenes.json"), "scenes.json")
        return root["scenes"].list.map { s ->
            val file = s["file"].string
            if (file.isEmpty() || file.startsWith("/") || ".." in file.split('/')) {
                throw MiniVlmException(ErrorKind.BAD_FILE, "scenes.json: scene file '$file' is not a plain name inside the scenes folder")
            }
            DemoScene(file, s["caption"].string, s.opt("questions")?.list?.map { it["question"].string to it["answer"].string }.orEmpty())
        }
    }
}
