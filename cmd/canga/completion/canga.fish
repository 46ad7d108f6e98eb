# fish completion for canga. Installed as
# /usr/share/fish/vendor_completions.d/canga.fish; or:
#   canga completion fish > ~/.config/fish/completions/canga.fish
# Every TAB runs `canga __complete -- WORD...`, which prints the candidates
# (see docs/completion.md).

function __canga_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    for line in ($tokens[1] __complete -- $tokens[2..-1] "$cur" 2>/dev/null)
        switch $line
            case ':file'
                __fish_complete_path "$cur"
            case ':dir'
                __fish_complete_directories "$cur"
            case ':nospace' ''
            case '*'
                echo $line
        end
    end
end

complete -c canga -f -a '(__canga_complete)'
