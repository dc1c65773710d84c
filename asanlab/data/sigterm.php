<?php
// Prepended by `asanlab run` to the app. The kernel drops a signal whose action is the default
// for a container's PID 1, so a plain script ignores SIGTERM, is killed after the grace period,
// and LeakSanitizer (which reports at a normal exit only) never writes its report. Here PID 1
// exits normally on SIGTERM instead. A handler the app installs replaces this one; Swoole servers
// install their own when they start.
if (getmypid() === 1 && function_exists('pcntl_signal') && pcntl_signal_get_handler(SIGTERM) === SIG_DFL) {
    pcntl_async_signals(true);
    pcntl_signal(SIGTERM, static function (): void {
        exit(143);
    });
}
// From here PID 1 takes SIGTERM (this handler, or the app's): asanlab waits for this mark before
// it sends one, so a stop asked for while PHP was still starting is not dropped.
if (getmypid() === 1) {
    @touch('/asanlab/state/php-started');
}
