from batchrouter import create_app

app = create_app()
