#compdef canga
# zsh completion for canga. Installed as
# /usr/share/zsh/vendor-completions/_canga; or:
#   canga completion zsh > "${fpath[1]}/_canga"
# Every TAB runs `canga __complete -- WORD...`, which prints the candidates
# (see docs/completion.md).

_canga() {
	local -a out vals disp
	local line val nospace=0 files=0 dirs=0
	out=("${(@f)$(${words[1]} __complete -- "${(@)words[2,CURRENT]}" 2>/dev/null)}")
	for line in "${out[@]}"; do
		case $line in
		:file) files=1 ;;
		:dir) dirs=1 ;;
		:nospace) nospace=1 ;;
		'') ;;
		*)
			val=${line%%$'\t'*}
			vals+=("$val")
			if [[ $line == *$'\t'* ]]; then
				disp+=("$val  -- ${line#*$'\t'}")
			else
				disp+=("$val")
			fi
			;;
		esac
	done
	if ((${#vals})); then
		if ((nospace)); then
			compadd -Q -S '' -l -d disp -a vals
		else
			compadd -Q -l -d disp -a vals
		fi
	fi
	((files)) && _files
	((dirs)) && _files -/
	return 0
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
	_canga "$@"
else
	compdef _canga canga
fi
