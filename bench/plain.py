"""The broker's limit on this machine: a plain pika publisher and a plain consumer.

Run as processes, like the seed and work commands they are compared with:
`python -m bench.plain publish URL QUEUE FILE` publishes each line of FILE without
publisher confirms, one blocking call per item; `publish-async` does the same on an
asynchronous connection that writes all of them at once; `python -m bench.plain
consume URL QUEUE COUNT PREFETCH` takes COUNT items and acknowledges each one.
"""

from __future__ import annotations

import sys

import pika

PERSISTENT = pika.DeliveryMode.Persistent


def _read_items(item_file: str) -> list[bytes]:
    with open(item_file, "rb") as source:
        return [line.rstrip(b"\n") for line in source if line.strip()]


def publish(url: str, queue_name: str, item_file: str) -> int:
    """Publish one item per line of `item_file`; returns how many were published.

    Messages are persistent, like the seeder's, but there are no confirms, no
    mandatory flag and no message id. A last synchronous call makes sure the broker
    has read every publish before the process ends.
    """
    items = _read_items(item_file)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        properties = pika.BasicProperties(delivery_mode=PERSISTENT)
        for item in items:
            channel.basic_publish("", queue_name, item, properties)
        channel.queue_declare(queue_name, passive=True)
    finally:
        connection.close()
    return len(items)


def publish_async(url: str, queue_name: str, item_file: str) -> int:
    """Like `publish`, but every publish goes into the connection's buffer at once
    and the I/O loop writes them out: no call waits for the socket per item.

    Raises:
        RuntimeError: the connection or the channel failed before the end.
    """
    items = _read_items(item_file)
    properties = pika.BasicProperties(delivery_mode=PERSISTENT)
    failures: list[str] = []

    def on_channel_open(channel) -> None:
        channel.add_on_close_callback(on_channel_closed)
        for item in items:
            channel.basic_publish("", queue_name, item, properties)
        channel.queue_declare(queue_name, passive=True, callback=on_all_read)

    def on_all_read(_frame) -> None:
        connection.close()

    def on_channel_closed(_channel, reason) -> None:
        if connection.is_open:
            failures.append(f"channel closed: {reason}")
            connection.close()

    def on_open_error(_connection, error) -> None:
        failures.append(f"connection failed: {error}")
        connection.ioloop.stop()

    connection = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda opened: opened.channel(
            on_open_callback=on_channel_open
        ),
        on_open_error_callback=on_open_error,
        on_close_callback=lambda _connection, _reason: connection.ioloop.stop(),
    )
    connection.ioloop.start()
    if failures:
        raise RuntimeError(failures[0])
    return len(items)


def consume(url: str, queue_name: str, count: int, prefetch: int) -> int:
    """Take `count` items, acknowledging each one, then stop; returns `count`."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    taken = 0
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)

        def on_item(channel, method, _properties, _body) -> None:
            nonlocal taken
            channel.basic_ack(method.delivery_tag)
            taken += 1
            if taken == count:
                channel.stop_consuming()

        channel.basic_consume(queue_name, on_item)
        channel.start_consuming()
    finally:
        connection.close()
    return taken


def main(argv: list[str]) -> int:
    """Run `publish` or `consume` with the arguments from the command line."""
    if argv[:1] == ["publish"] and len(argv) == 4:
        publish(argv[1], argv[2], argv[3])
        return 0
    if argv[:1] == ["publish-async"] and len(argv) == 4:
        publish_async(argv[1], argv[2], argv[3])
        return 0
    if argv[:1] == ["consume"] and len(argv) == 5:
        consume(argv[1], argv[2], int(argv[3]), int(argv[4]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
