from labs_api.cli import main

main()
