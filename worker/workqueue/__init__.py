"""Seeder and worker for the work-queue batch pattern on RabbitMQ."""
