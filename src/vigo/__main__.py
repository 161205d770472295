from vigo.cli.commands import main

raise SystemExit(main())
