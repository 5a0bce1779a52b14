package io.mocktrade.infra;

import java.io.IOException;
import java.util.HashMap;
import java.util.Map;

import org.codelibs.opensearch.runner.OpenSearchRunner;

/**
 * Starts a one-node OpenSearch cluster bound to loopback and waits until the
 * JVM is asked to stop (SIGTERM runs the shutdown hook, which closes the node).
 *
 * <pre>
 * java -cp 'lib/*:mocktrade-opensearch.jar' io.mocktrade.infra.OpenSearchMain \
 *     --base-path DIR --http-port 9200 --transport-port 9300 [--host 127.0.0.1]
 * </pre>
 */
public final class OpenSearchMain {

    private OpenSearchMain() {
    }

    public static void main(final String[] args) throws Exception {
        final Map<String, String> opts = parse(args);
        final String basePath = require(opts, "--base-path");
        final String host = opts.getOrDefault("--host", "127.0.0.1");
        final int httpPort = Integer.parseInt(opts.getOrDefault("--http-port", "9200"));
        final int transportPort = Integer.parseInt(opts.getOrDefault("--transport-port", "9300"));
        final String clusterName = opts.getOrDefault("--cluster-name", "mocktrade");

        final OpenSearchRunner runner = new OpenSearchRunner();
        runner.setMaxHttpPort(-1); // we pick the port; skip the runner's port probing
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final IOException e) {
                System.err.println("close failed: " + e);
            }
        }, "mocktrade-opensearch-shutdown"));

        runner.onBuild((number, settings) -> {
            settings.put("network.host", host);
            settings.put("http.port", String.valueOf(httpPort));
            settings.put("transport.port", String.valueOf(transportPort));
            settings.put("discovery.type", "single-node");
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
            settings.put("bootstrap.memory_lock", false);
            // One node: replicas could never be assigned, so new indices would stay yellow.
            settings.put("cluster.default_number_of_replicas", 0);
        });
        try {
            runner.build(OpenSearchRunner.newConfigs()
                    .basePath(basePath)
                    .clusterName(clusterName)
                    .numOfNode(1)
                    .baseHttpPort(httpPort - 1)
                    .printOnFailure());
        } catch (final RuntimeException e) {
            e.printStackTrace();
            System.exit(1);
        }
        System.out.println("mocktrade-opensearch started: http://" + host + ":" + httpPort);
        while (!runner.isClosed()) {
            Thread.sleep(1000);
        }
    }

    private static Map<String, String> parse(final String[] args) {
        final Map<String, String> opts = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            if (!args[i].startsWith("--") || i + 1 >= args.length) {
                throw new IllegalArgumentException("expected --name value pairs, got: " + args[i]);
            }
            opts.put(args[i], args[++i]);
        }
        return opts;
    }

    private static String require(final Map<String, String> opts, final String name) {
        final String value = opts.get(name);
        if (value == null) {
            throw new IllegalArgumentException(name + " is required");
        }
        return value;
    }
}
