from sagan_cli.main import app

app()
