// MiniVLM Android demo: the app and the `minivlm` library (Kotlin API over the native core via JNI).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "MiniVLMDemo"
include(":app", ":minivlm")
