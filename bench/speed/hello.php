<?php
// Swoole's hello world: one worker, coroutines on (Swoole's default).
$server = new Swoole\Http\Server("0.0.0.0", 9501, SWOOLE_BASE);
$server->set(["worker_num" => 1, "log_level" => SWOOLE_LOG_WARNING]);
$server->on("request", function ($request, $response) {
    $response->end("hello\n");
});
$server->start();
