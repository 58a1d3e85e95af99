// The JVMChaos test target (tests/host_jvm.rs): `java -cp DIR Target LOGFILE`.
//
// Forever, every 50 ms: calls value() (returns 7), then times a call of work() (sleeps 1 ms and
// returns a small int) and appends one line to LOGFILE, flushed at once:
//   <seq> ok <micros> <value>          work() returned after <micros> µs
//   <seq> exc <ExceptionClass> <micros> work() threw (class name, e.g. java.lang.IllegalStateException)
// Byteman rules on Target.work (delay, throw) and Target.value (DO return 42) show in the log.
// The first line is written before the first sleep, so a test can wait for the JVM to be up.
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.PrintStream;

public class Target {
    private static int counter;

    /** The method the delay and exception rules target: ~1 ms of work. */
    public static int work() {
        try {
            Thread.sleep(1);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        counter = (counter * 31 + 7) & 0xffff;
        return counter;
    }

    /** The method the return-value rule targets. */
    public static int value() {
        return 7;
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        if (args.length != 1) {
            System.err.println("usage: java -cp DIR Target LOGFILE");
            System.exit(2);
        }
        try (PrintStream out = new PrintStream(new FileOutputStream(args[0], true), false, "UTF-8")) {
            for (long seq = 0; ; seq++) {
                int v = value();
                long t0 = System.nanoTime();
                String line;
                try {
                    work();
                    long us = (System.nanoTime() - t0) / 1000;
                    line = seq + " ok " + us + " " + v;
                } catch (Throwable e) {
                    long us = (System.nanoTime() - t0) / 1000;
                    line = seq + " exc " + e.getClass().getName() + " " + us;
                }
                out.print(line + "\n");
                out.flush();
                Thread.sleep(50);
            }
        }
    }
}
