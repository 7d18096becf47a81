package ai.minivlm

import java.io.File

/**
 * Putting a freshly copied build folder in place of the installed one without ever losing both: the app's installed
 * copy is only deleted once the new one has taken its name. Kept apart from the Android asset copy so that the JVM
 * test checks it, failed renames included.
 */
object BuildInstall {
    /** The name the installed copy moves to while the new one takes its place. */
    fun previousOf(target: File): File = File(target.parentFile, "${target.name}.previous")

    /**
     * Move the complete folder `staging` to `target`. An installed `target` is first renamed aside, and deleted only
     * after `staging` took its name; if that rename fails, the installed copy is renamed back and the error names
     * both paths. A `target.previous` left by an interrupted install stands for the installed copy when `target` is
     * missing (it is what the next failure restores), and is deleted otherwise. `rename` is `File.renameTo` (a
     * parameter for the test).
     */
    fun replace(staging: File, target: File, rename: (File, File) -> Boolean = { from, to -> from.renameTo(to) }) {
        if (!staging.isDirectory) throw MiniVlmException(ErrorKind.IO_ERROR, "no staged build at ${staging.path}")
        val previous = previousOf(target)
        val hadTarget = target.exists()
        if (hadTarget) previous.deleteRecursively()
        val hasPrevious = previous.exists()
        if (hadTarget && !rename(target, previous)) {
            throw MiniVlmException(ErrorKind.IO_ERROR, "cannot move the installed build ${target.path} aside to ${previous.name}")
        }
        if (!rename(staging, target)) {
            val restored = !(hadTarget || hasPrevious) || rename(previous, target)
            throw MiniVlmException(
                ErrorKind.IO_ERROR,
                "cannot move the build ${staging.path} into ${target.path}" +
                    if (restored) "; the installed build is unchanged" else "; the installed build is at ${previous.path}",
            )
        }
        previous.deleteRecursively()
    }
}
