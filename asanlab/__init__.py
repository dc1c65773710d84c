"""asanlab: PHP and Swoole under AddressSanitizer, in one command."""

__version__ = "0.1.0"
