@rem Runs the Gradle version pinned in gradle\wrapper\gradle-wrapper.properties through the Gradle wrapper jar.
@rem The jar is a Gradle binary this repository does not commit: create it once with "gradle wrapper" in this
@rem folder (see android_demo\README.md), or let Android Studio create it.
@echo off
setlocal
set APP_HOME=%~dp0
set JAR=%APP_HOME%gradle\wrapper\gradle-wrapper.jar
if not exist "%JAR%" (
  echo gradlew: %JAR% is missing; create it with "gradle wrapper" in %APP_HOME% ^(see android_demo\README.md^) 1>&2
  exit /b 1
)
set JAVA_EXE=java.exe
if defined JAVA_HOME set JAVA_EXE=%JAVA_HOME%\bin\java.exe
"%JAVA_EXE%" %JAVA_OPTS% %GRADLE_OPTS% "-Dorg.gradle.appname=gradlew" -classpath "%JAR%" org.gradle.wrapper.GradleWrapperMain %*
exit /b %ERRORLEVEL%
