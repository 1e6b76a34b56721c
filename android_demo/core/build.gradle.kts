// The platform-independent core: plain Java 11, no android.* imports, JVM-tested.
// run_tests.sh is the reference test runner (it also builds the LiteRT JNI shim the golden
// tests need); Gradle runs the unit tests only.
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_11
    targetCompatibility = JavaVersion.VERSION_11
}

dependencies {
    implementation(libs.gson)
    testImplementation(libs.junit.jupiter)
    testRuntimeOnly("org.junit.platform:junit-platform-launcher")
}

tasks.test {
    useJUnitPlatform()
    exclude("org/facekd/core/golden/**")
}
