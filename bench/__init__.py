"""`make bench`: the seeder and worker against the tutorial's tools and plain pika."""
